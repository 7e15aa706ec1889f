//! Kafka: client configuration, the trade producer, the admin calls that create topics.

pub mod admin;
pub mod config;
pub mod producer;

pub use admin::{cluster_brokers, ensure_topics, topic_exists};
pub use config::{client_config, ConfigError};
pub use producer::TradeProducer;

use rdkafka::config::RDKafkaLogLevel;

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

/// Passes one librdkafka log line to the `log` crate as rust-rdkafka does, except the warnings
/// for a condition librdkafka retries on its own within milliseconds and every fresh broker
/// causes, which go out at info level: a warning on each start of a new cluster tells nothing.
pub fn log_line(level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel::*;
    let level = match level {
        Emerg | Alert | Critical | Error => log::Level::Error,
        Warning if retried_by_librdkafka(facility, message) => log::Level::Info,
        Warning => log::Level::Warn,
        Notice | Info => log::Level::Info,
        Debug => log::Level::Debug,
    };
    log::log!(target: "librdkafka", level, "librdkafka: {facility} {message}");
}

/// The warning librdkafka logs when a broker refused the producer id and it will ask again (not
/// its `debug=eos` lines of the same facility).
pub fn producer_id_refused(facility: &str, message: &str) -> bool {
    facility == "GETPID" && message.ends_with(": retrying")
}

/// The idempotent producer's first request for a producer id, answered "coordinator load in
/// progress" while a new broker fetches its first block of ids from the controller.
fn retried_by_librdkafka(facility: &str, message: &str) -> bool {
    producer_id_refused(facility, message) && message.contains("Coordinator load in progress")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_producer_id_retry_of_a_fresh_broker_is_not_a_warning() {
        let fresh =
            "[thrd:main]: Failed to acquire idempotence PID from broker 127.0.0.1:19092/1: \
                     Broker: Coordinator load in progress: retrying";
        assert!(retried_by_librdkafka("GETPID", fresh));
        assert!(!retried_by_librdkafka(
            "GETPID",
            "[thrd:main]: Failed to acquire idempotence PID from broker 1: \
             Broker: Cluster authorization failed"
        ));
        assert!(!retried_by_librdkafka("FAIL", fresh));
        assert!(producer_id_refused("GETPID", fresh));
        assert!(!producer_id_refused(
            "GETPID",
            "[thrd:main]: 127.0.0.1:19092/1: Failed to acquire PID: Broker: Coordinator load in progress"
        ));
    }
}
