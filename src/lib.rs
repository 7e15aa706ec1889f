//! stockpipe: a real-time stock-market data pipeline.
//!
//! The crate follows the data: [`source`] (Finnhub WebSocket and its simulator) → [`kafka`]
//! (producer, consumer, admin) → [`sink`] (Kafka → S3 JSONL) → [`transform`] (JSONL → Parquet).
//! Everything here is plain Rust; only [`bindings`] knows about Python.

pub mod config;
pub mod metrics;
pub mod record;
pub mod redact;
pub mod shutdown;

pub mod kafka;
pub mod sink;
pub mod source;
pub mod store;
pub mod transform;

#[cfg(feature = "python")]
mod bindings;

/// The crate version, shared with the Python package.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// mimalloc for every Rust allocation: the transform allocates a few small strings per row and
/// glibc's allocator showed as a quarter of its profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
