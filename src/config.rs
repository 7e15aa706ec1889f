//! Typed configuration for every stage. The Python layer owns defaults, precedence
//! (defaults < config.ini < environment < flags) and validation; it hands each stage its
//! section as JSON, which is deserialized here into these structs.

use serde::Deserialize;
use std::collections::BTreeMap;

/// `[finnhub]`: where trades come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinnhubConfig {
    #[serde(default)]
    pub api_key: Option<String>,
    pub ws_url: String,
    pub rest_url: String,
    pub symbols: Vec<String>,
    /// Symbols one connection may subscribe (50 on the free plan).
    pub max_symbols: usize,
    /// Reconnect backoff: first delay and cap, in seconds.
    pub backoff_initial_s: f64,
    pub backoff_max_s: f64,
    /// A connection that lived this long resets the backoff.
    pub stable_after_s: f64,
    /// Reconnect when nothing arrived for this long (about 2.5 ping intervals).
    pub silence_timeout_s: f64,
    /// Floor for the next attempt after an HTTP 429 at the upgrade.
    pub rate_limited_backoff_s: f64,
    /// Whole messages repeated within this window are dropped as duplicates.
    pub dedupe_window_ms: u64,
    /// Frames larger than this are rejected without being buffered whole.
    pub max_frame_bytes: usize,
    /// REST poll budget for `--mode quotes`.
    pub quotes_per_minute: u32,
}

/// `[kafka]`: the cluster, its security and the raw librdkafka passthrough.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub quotes_topic: String,
    pub group_id: String,
    pub security_protocol: String,
    #[serde(default)]
    pub ssl_ca_location: Option<String>,
    #[serde(default)]
    pub ssl_certificate_location: Option<String>,
    #[serde(default)]
    pub ssl_key_location: Option<String>,
    #[serde(default)]
    pub ssl_key_password: Option<String>,
    #[serde(default)]
    pub ssl_endpoint_identification: Option<String>,
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    #[serde(default)]
    pub sasl_password: Option<String>,
    pub compression: String,
    pub linger_ms: u64,
    pub batch_size_bytes: u64,
    pub idempotence: bool,
    /// Raw librdkafka properties; a key that a typed setting already owns is an error.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

/// `[sink]`: Kafka → object storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `s3://bucket/prefix` or `file:///path`.
    pub output: String,
    pub raw_prefix: String,
    pub batch_size: usize,
    pub batch_seconds: f64,
    pub batch_bytes: usize,
    pub gzip: bool,
    /// `AES256`, `aws:kms` or `none`.
    pub sse: String,
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    /// Records buffered per partition before that partition is paused.
    pub max_buffered_records: usize,
}

impl SinkConfig {
    /// The batch policy's limits must each close a batch: above zero, and a finite age.
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("batch_size", self.batch_size),
            ("batch_bytes", self.batch_bytes),
            ("max_buffered_records", self.max_buffered_records),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{key} = 0: must be greater than zero"));
        }
        if self.max_buffered_records < self.batch_size {
            // A partition stops reading at this mark, so a batch of batch_size would never fill.
            return Err(format!(
                "max_buffered_records = {}: must be at least batch_size ({}): a partition pauses \
                 at this many records, so its batches would close only after batch_seconds",
                self.max_buffered_records, self.batch_size
            ));
        }
        let age = self.batch_seconds;
        if !(age.is_finite() && age > 0.0) {
            return Err(format!("batch_seconds = {age}: must be greater than zero"));
        }
        Ok(())
    }
}

/// `[s3]`: how to reach the object store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub endpoint_url: Option<String>,
    pub region: String,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Of temporary credentials (an assumed role, SSO), with the key pair above.
    #[serde(default)]
    pub session_token: Option<String>,
    pub force_path_style: bool,
}

/// `[transform]`: raw JSONL → Parquet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    pub input: String,
    pub output: String,
    pub raw_prefix: String,
    pub processed_prefix: String,
    pub quarantine_prefix: String,
    pub compression: String,
    pub rows_per_file: u64,
    pub sse: String,
}

impl KafkaConfig {
    /// Secrets of this section, for redaction of messages that may echo them.
    pub fn secrets(&self) -> Vec<&str> {
        [&self.sasl_password, &self.ssl_key_password]
            .into_iter()
            .filter_map(|s| s.as_deref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(overrides: serde_json::Value) -> SinkConfig {
        let mut base = serde_json::json!({
            "output": "file:///tmp/x", "raw_prefix": "raw.data", "batch_size": 100,
            "batch_seconds": 10.0, "batch_bytes": 1 << 20, "gzip": false, "sse": "none",
            "max_buffered_records": 100_000,
        });
        for (k, v) in overrides.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_batch_policy_that_never_closes_a_batch_is_refused() {
        assert_eq!(sink(serde_json::json!({})).check(), Ok(()));
        for (overrides, expected) in [
            (serde_json::json!({"batch_size": 0}), "batch_size = 0"),
            (serde_json::json!({"batch_bytes": 0}), "batch_bytes = 0"),
            (
                serde_json::json!({"max_buffered_records": 0}),
                "max_buffered_records = 0",
            ),
            (
                serde_json::json!({"max_buffered_records": 99}),
                "max_buffered_records = 99: must be at least batch_size (100)",
            ),
            (
                serde_json::json!({"batch_seconds": -1.0}),
                "batch_seconds = -1",
            ),
            (
                serde_json::json!({"batch_seconds": 0.0}),
                "batch_seconds = 0",
            ),
        ] {
            let err = sink(overrides).check().unwrap_err();
            assert!(err.starts_with(expected), "{expected}: {err}");
        }
        let mut infinite = sink(serde_json::json!({}));
        infinite.batch_seconds = f64::INFINITY;
        assert!(infinite
            .check()
            .unwrap_err()
            .starts_with("batch_seconds = inf"));
    }
}
