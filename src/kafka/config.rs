//! The one place where typed Kafka settings become librdkafka properties.

use crate::config::KafkaConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("[kafka] librdkafka.{key}: conflicts with the typed setting that already sets it")]
    Conflict { key: String },
    #[error("[kafka] {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Which client the configuration is for: a few properties only apply to one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
    Admin,
}

/// Maps typed settings to librdkafka properties, then applies the raw passthrough, refusing any
/// passthrough key that a typed setting already owns (the typed one would silently lose).
pub fn client_config(cfg: &KafkaConfig, role: Role) -> Result<ClientConfig, ConfigError> {
    let mut props: Vec<(&str, String)> = vec![
        ("bootstrap.servers", cfg.bootstrap_servers.clone()),
        ("security.protocol", cfg.security_protocol.clone()),
        ("client.id", "stockpipe".into()),
    ];
    let optional = [
        ("ssl.ca.location", &cfg.ssl_ca_location),
        ("ssl.certificate.location", &cfg.ssl_certificate_location),
        ("ssl.key.location", &cfg.ssl_key_location),
        ("ssl.key.password", &cfg.ssl_key_password),
        (
            "ssl.endpoint.identification.algorithm",
            &cfg.ssl_endpoint_identification,
        ),
        ("sasl.mechanism", &cfg.sasl_mechanism),
        ("sasl.username", &cfg.sasl_username),
        ("sasl.password", &cfg.sasl_password),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            props.push((key, v.clone()));
        }
    }
    match role {
        Role::Producer => {
            props.extend([
                ("enable.idempotence", cfg.idempotence.to_string()),
                ("acks", "all".into()),
                ("compression.type", cfg.compression.clone()),
                ("linger.ms", cfg.linger_ms.to_string()),
                ("batch.size", cfg.batch_size_bytes.to_string()),
                // Bounds memory when the cluster slows down: ~0.2 s of trades at full speed,
                // far more than linger + acks keep in flight. Beyond it `send` waits.
                ("queue.buffering.max.messages", "100000".into()),
            ]);
            if !cfg.idempotence {
                // A control run (idempotence off) must be able to duplicate on retry.
                props.push(("max.in.flight.requests.per.connection", "5".into()));
            }
        }
        Role::Consumer => {
            props.extend([
                ("group.id", cfg.group_id.clone()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                ("auto.offset.reset", "earliest".into()),
                ("partition.assignment.strategy", "range".into()),
            ]);
        }
        Role::Admin => {}
    }
    let mut config = ClientConfig::new();
    for (k, v) in &props {
        config.set(*k, v);
    }
    for (k, v) in &cfg.librdkafka {
        if props.iter().any(|(owned, _)| owned == k) {
            return Err(ConfigError::Conflict { key: k.clone() });
        }
        config.set(k, v);
    }
    config.set_log_level(RDKafkaLogLevel::Warning);
    Ok(config)
}

#[cfg(test)]
pub(crate) fn test_config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.into(),
        topic: "stock-data".into(),
        dlq_topic: "stock-data-dlq".into(),
        quotes_topic: "stock-quotes".into(),
        group_id: "stockpipe-sink".into(),
        security_protocol: "plaintext".into(),
        ssl_ca_location: None,
        ssl_certificate_location: None,
        ssl_key_location: None,
        ssl_key_password: None,
        ssl_endpoint_identification: None,
        sasl_mechanism: None,
        sasl_username: None,
        sasl_password: None,
        compression: "lz4".into(),
        linger_ms: 2,
        batch_size_bytes: 1_000_000,
        idempotence: true,
        librdkafka: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_is_idempotent_with_acks_all() {
        let c = client_config(&test_config("h:1"), Role::Producer).unwrap();
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("bootstrap.servers"), Some("h:1"));
    }

    #[test]
    fn passthrough_conflict_is_refused() {
        let mut cfg = test_config("h:1");
        cfg.librdkafka.insert("acks".into(), "1".into());
        let err = client_config(&cfg, Role::Producer).unwrap_err();
        assert!(err.to_string().contains("librdkafka.acks"));
        cfg.librdkafka.clear();
        cfg.librdkafka
            .insert("socket.timeout.ms".into(), "1000".into());
        let c = client_config(&cfg, Role::Producer).unwrap();
        assert_eq!(c.get("socket.timeout.ms"), Some("1000"));
    }

    #[test]
    fn consumer_never_auto_commits() {
        let c = client_config(&test_config("h:1"), Role::Consumer).unwrap();
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }
}
