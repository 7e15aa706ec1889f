//! The trade producer: idempotent, acks=all, keyed by symbol; it waits (never drops) when the
//! local queue is full and counts every delivery report. Only once a stop was requested does a
//! wait for room end, after [`STOP_GRACE`]: the record is counted as `unqueued_at_stop`.

use super::config::{client_config, Role};
use super::Result;
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Message};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Counter names this producer maintains.
pub const COUNTERS: &[&str] = &[
    "trades_sent",
    "acked",
    "failed",
    "dlq",
    "dlq_acked",
    "queue_full_waits",
    "unqueued_at_stop",
    "last_ack_unix_us",
    // 1 once the brokers answered and the topics exist (the producer is made then).
    "kafka_ready",
];

/// How long a record still waits for room in the queue after a stop was requested (Ctrl-C with
/// the brokers away must not hang until librdkafka times every queued record out).
pub const STOP_GRACE: Duration = Duration::from_secs(4);

const DLQ_FLAG: usize = 1 << (usize::BITS - 1);

/// How long the warm-up waits for a refusal of the producer-id request it just caused.
const ID_ANSWER: Duration = Duration::from_millis(20);

/// Receives delivery reports on librdkafka's thread.
pub struct Tracker {
    metrics: Arc<Metrics>,
    epoch: Instant,
    /// Producer-id requests a broker refused for now ("coordinator load in progress" from a
    /// broker just started); librdkafka logs each one, then retries.
    id_refusals: AtomicU64,
}

impl ClientContext for Tracker {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if super::producer_id_refused(fac, log_message) {
            self.id_refusals.fetch_add(1, Ordering::Relaxed);
        }
        super::log_line(level, fac, log_message);
    }
}

impl ProducerContext for Tracker {
    /// Microseconds since `epoch` at which the trade's frame arrived; the top bit marks DLQ.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let is_dlq = opaque & DLQ_FLAG != 0;
        match result {
            Ok(_) if is_dlq => self.metrics.incr("dlq_acked"),
            Ok(_) => {
                self.metrics.incr("acked");
                self.metrics
                    .set("last_ack_unix_us", crate::record::now_us());
                let now = self.epoch.elapsed().as_micros() as u64;
                self.metrics
                    .record_latency_us(now.saturating_sub((opaque & !DLQ_FLAG) as u64));
            }
            Err((err, msg)) => {
                self.metrics.incr("failed");
                let key = msg
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                log::error!(
                    "delivery failed for {} record keyed {key:?} at {}: {err}",
                    if is_dlq { "dead-letter" } else { "trade" },
                    msg.topic()
                );
            }
        }
    }
}

/// Sends trade records and dead letters, tracking acknowledgements.
pub struct TradeProducer {
    inner: ThreadedProducer<Tracker>,
    topic: String,
    dlq_topic: String,
    metrics: Arc<Metrics>,
    epoch: Instant,
    stop: Option<Shutdown>,
    /// Set at the first full queue after the stop: every wait for room ends by then.
    stop_deadline: OnceLock<Instant>,
}

impl TradeProducer {
    pub fn new(cfg: &KafkaConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let epoch = Instant::now();
        let inner = client_config(cfg, Role::Producer)?.create_with_context(Tracker {
            metrics: metrics.clone(),
            epoch,
            id_refusals: AtomicU64::new(0),
        })?;
        Ok(Self {
            inner,
            topic: cfg.topic.clone(),
            dlq_topic: cfg.dlq_topic.clone(),
            metrics,
            epoch,
            stop: None,
            stop_deadline: OnceLock::new(),
        })
    }

    /// Fails as [`TradeProducer::new`] would with `cfg`, without keeping a producer (or its
    /// polling thread): for a producer made later, when first needed.
    pub fn check(cfg: &KafkaConfig) -> Result<()> {
        let _: BaseProducer = client_config(cfg, Role::Producer)?.create()?;
        Ok(())
    }

    /// Once `stop` fires, a record waiting for room in a full queue gives up after
    /// [`STOP_GRACE`] instead of waiting for the brokers indefinitely.
    pub fn stopping_on(mut self, stop: &Shutdown) -> Self {
        self.stop = Some(stop.clone());
        self
    }

    /// Overrides the destination topic (the quote poller publishes elsewhere).
    pub fn with_topic(mut self, topic: &str) -> Self {
        self.topic = topic.to_string();
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Connects, learns the topic's partition leaders and acquires the idempotent producer's id
    /// before the first trade arrives, so early trades do not wait for them (latency counts
    /// from a frame's arrival). Blocking, for at most `timeout`.
    ///
    /// librdkafka asks for a producer id on a metadata reply, from a broker that is up, or
    /// else on a 500 ms timer, which early trades would wait for. So: a first request (its
    /// reply comes over the bootstrap connection, which librdkafka then retires), a second one
    /// to the broker the first named, whose reply asks for the id at once; and one more each
    /// time a broker refused the id meanwhile (a broker just started answers "load in progress"
    /// until it has a block of ids), instead of the timer.
    pub fn warm_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let client = self.inner.client();
        let metadata = || {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = client.fetch_metadata(Some(&self.topic), left);
            if let Err(e) = &got {
                log::warn!("could not fetch the metadata of {}: {e}", self.topic);
            }
            got.is_ok()
        };
        if !metadata() {
            return;
        }
        loop {
            let refusals = client.context().id_refusals.load(Ordering::Relaxed);
            if !metadata() {
                return;
            }
            // A refusal comes back within a round trip; past that, the id was granted (or,
            // from a distant cluster, librdkafka's own retry takes over).
            std::thread::sleep(ID_ANSWER);
            let refused = client.context().id_refusals.load(Ordering::Relaxed) > refusals;
            if !refused || Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Queues one trade record keyed by its symbol. `received` is when its frame arrived.
    /// False only when stopping and the record could not be queued.
    pub async fn send_trade(&self, symbol: &str, payload: &[u8], received: Instant) -> bool {
        let stamp = received.saturating_duration_since(self.epoch).as_micros() as usize & !DLQ_FLAG;
        self.metrics.incr("trades_sent");
        let record = BaseRecord::with_opaque_to(&self.topic, stamp)
            .key(symbol)
            .payload(payload);
        self.enqueue(record).await
    }

    /// Queues a dead letter: the raw input and why it was refused.
    pub async fn send_dead_letter(&self, reason: &str, raw: &str, stage: &str) {
        self.metrics.incr("dlq");
        let mut payload = String::with_capacity(raw.len() + 96);
        payload.push_str("{\"reason\":");
        crate::record::push_json_string(&mut payload, reason);
        payload.push_str(",\"stage\":");
        crate::record::push_json_string(&mut payload, stage);
        payload.push_str(&format!(
            ",\"received_ts\":{},\"raw\":",
            crate::record::now_ms()
        ));
        crate::record::push_json_string(&mut payload, raw);
        payload.push('}');
        let record = BaseRecord::with_opaque_to(&self.dlq_topic, DLQ_FLAG)
            .key(reason)
            .payload(payload.as_bytes());
        self.enqueue(record).await;
    }

    /// Queues `record`, waiting while the queue is full; false when it gave up (stopping).
    async fn enqueue(&self, mut record: BaseRecord<'_, str, [u8], usize>) -> bool {
        loop {
            match self.inner.send(record) {
                Ok(()) => return true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Back-pressure: wait for deliveries to drain the queue, never drop...
                    self.metrics.incr("queue_full_waits");
                    // ...unless the process is stopping and the brokers take no more.
                    if self.stop.as_ref().is_some_and(Shutdown::is_triggered) {
                        let deadline = *self
                            .stop_deadline
                            .get_or_init(|| Instant::now() + STOP_GRACE);
                        if Instant::now() >= deadline {
                            if self.metrics.get("unqueued_at_stop") == 0 {
                                log::warn!(
                                    "stopping: Kafka took no record for {STOP_GRACE:?}; the records still arriving are not queued"
                                );
                            }
                            self.metrics.incr("unqueued_at_stop");
                            return false;
                        }
                    }
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((err, back)) => {
                    self.metrics.incr("failed");
                    log::error!("cannot queue record for {}: {err}", back.topic);
                    return false;
                }
            }
        }
    }

    /// Records queued or in flight, not yet acknowledged or failed.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// Waits up to `timeout` for every queued record to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout)?;
        Ok(())
    }
}
