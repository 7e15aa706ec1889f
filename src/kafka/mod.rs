//! Kafka: client configuration, the trade producer, the admin calls that create topics.

pub mod admin;
pub mod config;
pub mod producer;

pub use admin::{cluster_brokers, ensure_topics, topic_exists};
pub use config::{client_config, ConfigError};
pub use producer::TradeProducer;

/// Errors of the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;
