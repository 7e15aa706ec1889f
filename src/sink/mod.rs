//! Kafka → object storage: partition → batch → encode → claim → put → commit.
//!
//! Each step is a small piece: [`encode`] turns a record into a JSONL line and finds its day,
//! [`partition`] batches per Kafka partition, [`claims`] makes a batch's extent durable before
//! its objects are written, `write` claims and puts a batch's objects, and `poller`, the polling
//! thread, composes them around one consumer (its settings and rebalances in `rebalance`), whose
//! records [`fetch`] hands over in bursts. [`run_sink`] checks the store and the topics, makes the
//! consumer and runs the poller.

pub mod claims;
mod consumer;
pub mod encode;
pub mod fetch;
pub mod partition;
mod poller;
mod rebalance;
mod write;

pub use consumer::run_sink;
pub use rebalance::consumer_config;

/// Counter names the sink maintains.
pub const COUNTERS: &[&str] = &[
    "records_in",
    "records_written",
    "redelivered",
    "objects",
    "bytes",
    "batches",
    "claims_adopted",
    "dlq",
    "s3_errors",
    "kafka_errors",
    "commits",
    "partitions",
    "lag",
    "oldest_buffered_ms",
    "buffered",
    // 1 once the brokers answered (and the dead-letter topic exists).
    "kafka_ready",
    // When the first record was read, and when a write last completed (µs since the epoch).
    "first_record_unix_us",
    "last_write_unix_us",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::Error),
    #[error("sink: {0}")]
    Other(String),
}

impl From<rdkafka::error::KafkaError> for Error {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Error::Kafka(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
