//! The sink's loop: one thread polls Kafka and batches per partition; each partition's closed
//! batch is written ([`write`](super::write)) through the claim protocol on the runtime (one
//! write in flight per partition, partitions in parallel), and its offset is committed only
//! after the objects are durable.

use super::fetch::{Fetch, Record, Route};
use super::partition::{Batch, PartitionState, Policy};
use super::rebalance::{consumer_config, Event, InFlight, SinkContext};
use super::write::{write_batch, Written, RUN_MAX_BATCHES, RUN_MAX_BYTES};
use super::{encode, Error, Result};
use crate::config::{KafkaConfig, S3Config, SinkConfig};
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Encryption, Probe, Store};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Message;
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Consumes `kafka.topic` and writes JSONL objects until `shutdown`, then flushes what it holds.
/// Blocking: call it from a thread of its own; `rt` runs the storage calls.
pub fn run_sink(
    kcfg: &KafkaConfig,
    scfg: &SinkConfig,
    s3: &S3Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    rt: Handle,
) -> Result<()> {
    scfg.check().map_err(Error::Other)?;
    let encryption = Encryption::from_config(&scfg.sse, scfg.sse_kms_key_id.as_deref());
    // A stop while the store does not answer yet ends the sink here: nothing was read.
    let Some(store) = rt.block_on(shutdown.or(Store::open(&scfg.output, s3, encryption))) else {
        return Ok(());
    };
    let store = store?;
    // A bucket that does not exist or refuses these credentials is a setting to fix, not an
    // outage to wait out; a server that does not answer yet is, and writes retry until it does.
    match rt.block_on(shutdown.or(store.probe())) {
        None => return Ok(()),
        Some(Ok(())) => {}
        Some(Err(Probe::Refused(e))) => {
            return Err(Error::Other(format!(
                "cannot write to {}: {e}",
                store.describe()
            )))
        }
        Some(Err(Probe::Unreachable(e))) => log::warn!(
            "sink: {} does not answer yet ({e}); writes will retry until it does",
            store.describe()
        ),
    }
    // Dead letters need somewhere to go (brokers may not auto-create topics).
    rt.block_on(crate::kafka::ensure_topics(
        kcfg,
        &[(kcfg.dlq_topic.clone(), 1)],
        Duration::from_secs(30),
        &shutdown,
    ))?;
    metrics.set("kafka_ready", 1);
    // A sink may start before its producer; a topic that never appears is more likely a typo.
    let exists = crate::kafka::topic_exists(kcfg, &kcfg.topic, Duration::from_secs(10));
    if let Some(Ok(false)) = rt.block_on(shutdown.or(exists)) {
        log::warn!(
            "sink: topic {} does not exist yet; waiting for it (the producer and `stockpipe topics` \
             create it)",
            kcfg.topic
        );
    }
    log::info!("sink: {} → {}", kcfg.topic, store.describe());
    let inflight = Arc::new(InFlight::default());
    let context = SinkContext {
        store: store.clone(),
        topic: kcfg.topic.clone(),
        rt: rt.clone(),
        events: Mutex::new(Vec::new()),
        shutdown: shutdown.clone(),
        inflight: inflight.clone(),
        route: Route::default(),
    };
    let consumer: BaseConsumer<SinkContext> =
        consumer_config(kcfg)?.create_with_context(context)?;
    // Before the first assignment, so every assigned partition's records come through it.
    let mut fetch = Fetch::new(&consumer, &consumer.context().route);
    consumer.subscribe(&[&kcfg.topic])?;
    // Made on the first dead letter (an idle producer's polling thread still costs CPU); its
    // settings are checked now, so a bad one stops the sink here rather than at that record.
    TradeProducer::check(kcfg)?;
    let dlq = DeadLetters {
        kafka: kcfg.clone(),
        shutdown: shutdown.clone(),
        producer: None,
    };
    let (done_tx, done_rx) = channel();
    let mut sink = Sink {
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
        dlq,
        inflight,
        done_tx,
        done_rx,
        generations: 0,
        ready: Vec::new(),
    };
    sink.run(&consumer, &mut fetch, &shutdown);
    Ok(())
}

struct Sink {
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

/// A finished write, handed back to the polling thread.
struct Done {
    partition: i32,
    generation: u64,
    batch: Batch,
    result: Result<Written>,
}

impl Sink {
    fn run(
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
                drain_deadline = Some(Instant::now() + Duration::from_secs(30));
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
                // Nothing to read: wait for whichever comes first that has work for us. With a
                // write in flight that is its completion (the next one of the partition starts
                // right away), otherwise the next record (briefly: a rebalance waits meanwhile).
                if self.parts.values().any(|s| s.inflight.is_some()) {
                    if let Ok(done) = self.done_rx.recv_timeout(Duration::from_millis(20)) {
                        self.finish(consumer, done);
                    }
                } else if !draining {
                    taken = fetch.take(Duration::from_millis(20));
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
                // A partition not routed through `fetch` (none is expected) still gets read.
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
            while let Ok(done) = self.done_rx.try_recv() {
                self.finish(consumer, done);
            }
            let now = Instant::now();
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
            // Cheap (local state and librdkafka's cached watermarks); fresh for a status line
            // a second, or a scrape.
            if now.duration_since(last_gauges) >= Duration::from_millis(500) {
                last_gauges = now;
                self.update_gauges(consumer, now);
            }
            if draining {
                let idle = self.parts.values().all(|s| {
                    s.inflight.is_none()
                        && s.pending.is_empty()
                        && s.should_close(&self.policy, true, now).is_none()
                });
                if idle || drain_deadline.is_some_and(|d| now >= d) {
                    break;
                }
            }
        }
        self.update_gauges(consumer, Instant::now());
        let unwritten: usize = self.parts.values().map(PartitionState::buffered).sum();
        if unwritten > 0 {
            log::warn!(
                "sink: stopped with {unwritten} records not written (their writes still failed after \
                 30 s); they stay in Kafka, uncommitted, for the next sink"
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
        if st.buffered() > self.cfg.max_buffered_records && !st.paused {
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

    /// Starts writing the pending batch of partition `p` on the runtime; [`Sink::finish`] takes
    /// the outcome back on this thread.
    fn start_write(&mut self, p: i32) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let Some(batch) = st.next_write(RUN_MAX_BATCHES, RUN_MAX_BYTES) else {
            return;
        };
        st.inflight = Some((batch.lines.len(), batch.opened_at));
        let generation = st.generation;
        self.inflight.begin(p);
        let (store, topic, cfg) = (self.store.clone(), self.topic.clone(), self.cfg.clone());
        let (tx, inflight) = (self.done_tx.clone(), self.inflight.clone());
        self.rt.spawn(async move {
            let result = write_batch(&store, &topic, p, &cfg, &batch).await;
            let _ = tx.send(Done {
                partition: p,
                generation,
                batch,
                result,
            });
            inflight.end(p);
        });
    }

    /// Applies a finished write: commit after success; on failure schedule a retry with backoff
    /// and pause the partition so memory stays bounded while storage is away. A write for a
    /// partition revoked meanwhile is ignored (its next owner honours the claim).
    fn finish(&mut self, consumer: &BaseConsumer<SinkContext>, done: Done) {
        let Done {
            partition: p,
            generation,
            batch,
            result,
        } = done;
        match self.parts.get_mut(&p) {
            Some(st) if st.generation == generation => st.inflight = None,
            _ => return,
        }
        match result {
            Ok(Written::Done { objects, bytes }) => {
                let st = self.parts.get_mut(&p).expect("partition present");
                st.backoff = Duration::ZERO;
                // Resume well below the pause mark: a partition paused and resumed around one
                // level would make the consumer drop and re-fetch its prefetched records each time.
                let resume = st.paused && st.buffered() <= self.cfg.max_buffered_records / 2;
                self.metrics.add("batches", batch.cuts.len() as u64);
                self.metrics.add("objects", objects as u64);
                self.metrics.add("bytes", bytes as u64);
                self.metrics
                    .add("records_written", batch.lines.len() as u64);
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(batch.end + 1));
                if consumer.commit(&tpl, CommitMode::Async).is_ok() {
                    self.metrics.incr("commits");
                }
                if resume {
                    self.pause(consumer, p, false);
                }
            }
            Ok(Written::NeedMore(claim)) => {
                self.metrics.incr("claims_adopted");
                if let Some(st) = self.parts.get_mut(&p) {
                    st.unread(batch, claim);
                }
            }
            Ok(Written::Split(claim)) => {
                self.metrics.incr("claims_adopted");
                if let Some(st) = self.parts.get_mut(&p) {
                    st.unread(batch, claim);
                    if let Some(cut) = st.take() {
                        st.pending.push_front(cut);
                    }
                    st.retry_at = Instant::now();
                }
            }
            Err(e) => {
                self.metrics.incr("s3_errors");
                let st = self.parts.get_mut(&p).expect("partition present");
                st.backoff =
                    (st.backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(10));
                st.retry_at = Instant::now() + st.backoff;
                log::warn!(
                    "sink: writing partition {p} offsets {}..={} failed ({e}); retrying in {:?}",
                    batch.start,
                    batch.end,
                    st.backoff
                );
                st.pending.push_front(Batch {
                    attempted: true,
                    ..batch
                });
                if !st.paused {
                    self.pause(consumer, p, true);
                }
            }
        }
    }

    fn update_gauges(&mut self, consumer: &BaseConsumer<SinkContext>, now: Instant) {
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
