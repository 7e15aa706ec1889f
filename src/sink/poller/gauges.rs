//! The sink's gauges: what it holds, how old the oldest record held is, and how far each
//! partition is behind its high watermark.

use super::Sink;
use crate::sink::rebalance::SinkContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;
use std::time::Instant;

impl Sink {
    pub(super) fn update_gauges(&mut self, consumer: &BaseConsumer<SinkContext>, now: Instant) {
        let oldest = self
            .parts
            .values()
            .filter_map(|s| s.oldest_age(now))
            .max()
            .unwrap_or_default();
        self.metrics
            .set("oldest_buffered_ms", oldest.as_millis() as u64);
        self.metrics.set(
            "buffered",
            self.parts.values().map(|s| s.buffered() as u64).sum(),
        );
        // The locally cached high watermarks (updated by every fetch): no broker round trip.
        let topic = std::ffi::CString::new(&*self.topic).unwrap_or_default();
        let mut lag = 0i64;
        let mut per_partition = Vec::new();
        for (p, st) in &self.parts {
            let (mut low, mut high) = (0i64, 0i64);
            // SAFETY: the client pointer is valid while `consumer` lives; the out-params are locals.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    consumer.client().native_ptr(),
                    topic.as_ptr(),
                    *p,
                    &mut low,
                    &mut high,
                )
            };
            if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
                let written = st.next_offset.unwrap_or(low) - st.buffered() as i64;
                let behind = (high - written).max(0);
                lag += behind;
                per_partition.push((format!("lag_p{p}"), behind as u64));
            }
        }
        self.metrics
            .set_with_parts("lag", lag as u64, "lag_p", per_partition);
    }
}
