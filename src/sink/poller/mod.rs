//! The sink's polling thread: it reads Kafka and batches per partition; each partition's closed
//! batch is written ([`write`](super::write)) through the claim protocol on the runtime (one
//! write in flight per partition, partitions in parallel), and its offset is committed only
//! after the objects are durable.

mod gauges;
mod writes;

use crate::config::{KafkaConfig, SinkConfig};
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::encode;
use crate::sink::fetch::{Fetch, Record};
use crate::sink::partition::{PartitionState, Policy};
use crate::sink::rebalance::{Event, InFlight, SinkContext};
use crate::store::Store;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Message;
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use writes::Done;

/// How long a stopping sink still tries to write what it holds.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The polling thread's state: each assigned partition's records and batches, the writes in
/// flight, the dead-letter producer.
pub(super) struct Sink {
    policy: Policy,
    cfg: Arc<SinkConfig>,
    topic: Arc<str>,
    store: Store,
    rt: Handle,
    metrics: Arc<Metrics>,
    parts: BTreeMap<i32, PartitionState>,
    dlq: DeadLetters,
    inflight: Arc<InFlight>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    generations: u64,
    /// Partitions whose pending batch can start writing (reused buffer).
    ready: Vec<i32>,
    /// Whether a record was read yet (its time is a gauge).
    read_any: bool,
}

/// The dead-letter producer, made when the first record needs it.
struct DeadLetters {
    kafka: KafkaConfig,
    shutdown: Shutdown,
    producer: Option<TradeProducer>,
}

impl DeadLetters {
    fn producer(&mut self) -> crate::kafka::Result<&TradeProducer> {
        if self.producer.is_none() {
            let metrics = Metrics::new(crate::kafka::producer::COUNTERS);
            self.producer =
                Some(TradeProducer::new(&self.kafka, metrics)?.stopping_on(&self.shutdown));
        }
        Ok(self.producer.as_ref().expect("just made"))
    }
}

impl Sink {
    pub(super) fn new(
        kcfg: &KafkaConfig,
        scfg: &SinkConfig,
        store: Store,
        rt: Handle,
        metrics: Arc<Metrics>,
        inflight: Arc<InFlight>,
        shutdown: &Shutdown,
    ) -> Self {
        let (done_tx, done_rx) = channel();
        Sink {
            policy: Policy {
                records: scfg.batch_size,
                bytes: scfg.batch_bytes,
                age: Duration::from_secs_f64(scfg.batch_seconds),
            },
            cfg: Arc::new(scfg.clone()),
            topic: Arc::from(kcfg.topic.as_str()),
            store,
            rt,
            metrics,
            parts: BTreeMap::new(),
            dlq: DeadLetters {
                kafka: kcfg.clone(),
                shutdown: shutdown.clone(),
                producer: None,
            },
            inflight,
            done_tx,
            done_rx,
            generations: 0,
            ready: Vec::new(),
            read_any: false,
        }
    }

    /// Reads, batches and writes until `shutdown`, then writes what it holds (for at most
    /// [`DRAIN_LIMIT`]) and commits.
    pub(super) fn run(
        &mut self,
        consumer: &BaseConsumer<SinkContext>,
        fetch: &mut Fetch<'_>,
        shutdown: &Shutdown,
    ) {
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let draining = shutdown.is_triggered();
            if draining && drain_deadline.is_none() {
                log::info!("sink: stopping; writing what is buffered");
                drain_deadline = Some(Instant::now() + DRAIN_LIMIT);
            }
            // Rebalances (applied before any record of a new partition is taken), errors and
            // commit results; the records themselves come through `fetch`.
            let polled = consumer.poll(Duration::ZERO);
            self.apply_rebalances(consumer);
            let mut taken = if draining {
                0
            } else {
                fetch.take(Duration::ZERO)
            };
            if taken == 0 && polled.is_none() {
                taken = self.wait_for_work(consumer, fetch, draining);
            }
            if taken > 0 {
                let now = Instant::now();
                for r in fetch.records() {
                    match &r.error {
                        None => self.accept(consumer, &r, now),
                        Some(e) => self.kafka_error(e),
                    }
                }
            }
            if !draining {
                self.accept_polled(consumer, polled);
            }
            while let Ok(done) = self.done_rx.try_recv() {
                self.finish(consumer, done);
            }
            let now = Instant::now();
            self.start_writes(draining, now);
            // Cheap (local state and librdkafka's cached watermarks); fresh for a status line
            // a second, or a scrape.
            if now.duration_since(last_gauges) >= Duration::from_millis(500) {
                last_gauges = now;
                self.update_gauges(consumer, now);
            }
            if draining && (self.idle(now) || drain_deadline.is_some_and(|d| now >= d)) {
                break;
            }
        }
        self.wind_down(consumer);
    }

    /// Nothing was read: waits for whichever comes first that has work for us and returns how
    /// many records `fetch` took meanwhile. With a write in flight that is its completion (the
    /// next one of the partition starts right away), otherwise the next record (briefly: a
    /// rebalance waits meanwhile).
    fn wait_for_work(
        &mut self,
        consumer: &BaseConsumer<SinkContext>,
        fetch: &mut Fetch<'_>,
        draining: bool,
    ) -> usize {
        if self.parts.values().any(|s| s.inflight.is_some()) {
            if let Ok(done) = self.done_rx.recv_timeout(Duration::from_millis(20)) {
                self.finish(consumer, done);
            }
        } else if !draining {
            return fetch.take(Duration::from_millis(20));
        } else {
            // Stopping, and every write left is backing off: wait for the first retry
            // (briefly, so rebalances are still served) rather than spin.
            let first_retry = self
                .parts
                .values()
                .filter(|s| !s.pending.is_empty())
                .map(|s| s.retry_at)
                .min();
            let wait = first_retry.map_or(Duration::from_millis(20), |at| {
                at.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(wait.min(Duration::from_millis(20)));
        }
        0
    }

    /// A record of a partition not routed through `fetch` (none is expected) still gets read.
    fn accept_polled(
        &mut self,
        consumer: &BaseConsumer<SinkContext>,
        polled: Option<KafkaResult<BorrowedMessage<'_>>>,
    ) {
        match polled {
            Some(Ok(m)) => {
                let r = Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload(),
                    timestamp_ms: m.timestamp().to_millis(),
                    error: None,
                };
                self.accept(consumer, &r, Instant::now());
            }
            Some(Err(e)) => self.kafka_error(&e.to_string()),
            None => {}
        }
    }

    /// Closes the batches whose time has come and starts the next write of each partition that
    /// has none in flight and is not backing off.
    fn start_writes(&mut self, draining: bool, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        for (p, st) in self.parts.iter_mut() {
            if let Some(why) = st.should_close(&self.policy, draining, now) {
                log::debug!("sink: partition {p} batch closes ({why:?})");
                if let Some(batch) = st.take() {
                    st.pending.push_back(batch);
                }
            }
            // Claims go strictly in order: one write in flight per partition.
            if st.inflight.is_none() && !st.pending.is_empty() && now >= st.retry_at {
                ready.push(*p);
            }
        }
        for p in ready.drain(..) {
            self.start_write(p);
        }
        self.ready = ready;
    }

    /// Stopping: nothing is in flight, pending, or left to close.
    fn idle(&self, now: Instant) -> bool {
        self.parts.values().all(|s| {
            s.inflight.is_none()
                && s.pending.is_empty()
                && s.should_close(&self.policy, true, now).is_none()
        })
    }

    /// After the loop: the last gauges, what could not be written, the final commit and the
    /// dead letters' flush.
    fn wind_down(&mut self, consumer: &BaseConsumer<SinkContext>) {
        self.update_gauges(consumer, Instant::now());
        let unwritten: usize = self.parts.values().map(PartitionState::buffered).sum();
        if unwritten > 0 {
            log::warn!(
                "sink: stopped with {unwritten} records not written (their writes still failed after \
                 {} s); they stay in Kafka, uncommitted, for the next sink",
                DRAIN_LIMIT.as_secs()
            );
        }
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        if let Some(dlq) = &self.dlq.producer {
            let _ = dlq.flush(Duration::from_secs(5));
        }
    }

    fn apply_rebalances(&mut self, consumer: &BaseConsumer<SinkContext>) {
        let events = {
            let Ok(mut ev) = consumer.context().events.lock() else {
                return;
            };
            std::mem::take(&mut *ev)
        };
        for e in events {
            match e {
                Event::Assigned(p, resume) => {
                    if resume.adopt.is_some() {
                        self.metrics.incr("claims_adopted");
                    }
                    self.generations += 1;
                    let st = PartitionState::with_generation(
                        p,
                        resume.offset,
                        resume.adopt,
                        self.generations,
                    );
                    self.parts.insert(p, st);
                }
                Event::Revoked(p) => {
                    // Whatever was buffered is abandoned cleanly: nothing of it was committed,
                    // and any claim already made is honoured by the next owner.
                    self.parts.remove(&p);
                }
            }
        }
        self.metrics.set("partitions", self.parts.len() as u64);
    }

    fn kafka_error(&self, e: &str) {
        self.metrics.incr("kafka_errors");
        log::warn!("sink: consumer error: {e}");
    }

    /// Buffers one record; a batch that reaches its count, size or adopted claim closes here, at
    /// that record (`now`: when the burst it came in was taken).
    fn accept(&mut self, consumer: &BaseConsumer<SinkContext>, r: &Record<'_>, now: Instant) {
        let p = r.partition;
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let offset = r.offset;
        let line = match encode::encode(r.payload, p, offset, r.timestamp_ms) {
            Ok(l) => Some(l),
            Err(reason) => {
                self.metrics.incr("dlq");
                let raw = String::from_utf8_lossy(r.payload.unwrap_or_default()).into_owned();
                let stage = format!("sink partition {p} offset {offset}");
                match self.dlq.producer() {
                    Ok(dlq) => {
                        self.rt
                            .block_on(dlq.send_dead_letter(reason.as_str(), &raw, &stage))
                    }
                    // Its settings passed the check at start: only a resource failure gets here.
                    Err(e) => log::error!("sink: no dead-letter producer ({e}); {stage} dropped"),
                }
                None
            }
        };
        if st.push(offset, line) {
            if !self.read_any {
                self.read_any = true;
                self.metrics
                    .set("first_record_unix_us", crate::record::now_us());
            }
            self.metrics.incr("records_in");
        } else {
            self.metrics.incr("redelivered");
        }
        if let Some(why) = st.should_close(&self.policy, false, now) {
            log::debug!("sink: partition {p} batch closes ({why:?})");
            if let Some(batch) = st.take() {
                st.pending.push_back(batch);
            }
        }
        if st.over(self.cfg.max_buffered_records) && !st.paused {
            self.pause(consumer, p, true);
        }
    }

    fn pause(&mut self, consumer: &BaseConsumer<SinkContext>, p: i32, pause: bool) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p);
        let result = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if result.is_ok() {
            st.paused = pause;
            log::info!(
                "sink: partition {p} {}",
                if pause { "paused" } else { "resumed" }
            );
        }
    }
}
