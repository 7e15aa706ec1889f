//! Raw JSONL → Parquet, applying the shared rule set.
//!
//! [`rules`] is the compiled copy of `python/stockpipe/rules.py` (the definition both engines
//! follow), [`assemble`] turns a day's raw objects into de-duplicated, sorted rows, [`parquet`]
//! encodes them in the processed schema, and [`engine`] picks the raw days to (re)build and writes
//! them with deterministic names, a quarantine and a manifest.

pub mod assemble;
pub mod engine;
mod fields;
pub mod intern;
mod line;
pub mod parquet;
pub mod rules;

pub use engine::{run_transform, Selection, COUNTERS};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Input(String),
    #[error("transform: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;
