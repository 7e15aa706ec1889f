//! Where trades come from: the Finnhub WebSocket (or anything speaking its protocol, such as
//! the bundled simulator), and the REST quote poller.

pub mod backoff;
pub mod client;
pub mod dedupe;
pub mod frame;
pub mod quotes;
pub mod simulator;
mod stream;

pub use client::run_ingest;

/// Errors of the ingestion layer. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "finnhub refused the API key (HTTP 401 at the WebSocket upgrade); check FINNHUB_API_KEY"
    )]
    Unauthorized,
    #[error("{count} symbols configured but the plan allows {max} per connection; set [finnhub] max_symbols if your plan allows more")]
    TooManySymbols { count: usize, max: usize },
    #[error("invalid WebSocket URL {0}")]
    BadUrl(String),
    #[error("no API key: set FINNHUB_API_KEY (free at https://finnhub.io/register) or point --ws-url at a simulator")]
    NoApiKey,
    #[error("ingest: {0}")]
    Other(String),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
