//! The sink's consumer loop: one thread polls Kafka and batches per partition; each partition's
//! closed batch is written through the claim protocol on the runtime (one write in flight per
//! partition, partitions in parallel), and its offset is committed only after the objects are
//! durable.

use super::claims::{self, Claim, Claimed, Resume};
use super::encode::{self, Day, Line};
use super::fetch::{Fetch, Record, Route};
use super::partition::{Batch, PartitionState, Policy};
use super::{Error, Result};
use crate::config::{KafkaConfig, S3Config, SinkConfig};
use crate::kafka::config::{client_config, Role};
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Encryption, Probe, Store};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

enum Event {
    Assigned(i32, Resume),
    Revoked(i32),
}

/// The partitions with a write in flight. A revoke waits here, so a partition's old owner has
/// stopped writing before its new owner resumes from the claims.
#[derive(Default)]
struct InFlight {
    partitions: Mutex<BTreeSet<i32>>,
    done: Condvar,
}

impl InFlight {
    fn begin(&self, p: i32) {
        if let Ok(mut s) = self.partitions.lock() {
            s.insert(p);
        }
    }

    fn end(&self, p: i32) {
        if let Ok(mut s) = self.partitions.lock() {
            s.remove(&p);
        }
        self.done.notify_all();
    }

    /// Waits until none of `ps` has a write in flight, or `limit` passes (false).
    fn wait(&self, ps: &[i32], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Ok(mut s) = self.partitions.lock() else {
            return false;
        };
        while ps.iter().any(|p| s.contains(p)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = match self.done.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(_) => return false,
            };
        }
        true
    }
}

/// Receives rebalances on the polling thread: decides where each new partition resumes
/// (committed offset and claims), and tells the loop what it gained and lost.
struct SinkContext {
    store: Store,
    topic: String,
    rt: Handle,
    events: Mutex<Vec<Event>>,
    shutdown: Shutdown,
    inflight: Arc<InFlight>,
    /// Where assigned partitions' records go (the loop's [`Fetch`]).
    route: Route,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let committed = consumer
                    .committed_offsets(tpl.clone(), Duration::from_secs(15))
                    .ok();
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for p in partitions {
                    let committed_offset = committed
                        .as_ref()
                        .and_then(|c| c.find_partition(&self.topic, p))
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    let resume = self.resume_with_retry(p, committed_offset);
                    let offset = resume.offset.map_or(Offset::Beginning, Offset::Offset);
                    let _ = tpl.set_partition_offset(&self.topic, p, offset);
                    log::info!(
                        "sink: assigned partition {p}, resuming at {offset:?}{}",
                        if resume.adopt.is_some() {
                            " (honouring an existing claim)"
                        } else {
                            ""
                        }
                    );
                    self.route.forward(consumer, &self.topic, p);
                    self.push(Event::Assigned(p, resume));
                }
                if let Err(e) = consumer.assign(tpl) {
                    log::error!("sink: assign failed: {e}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                if !self.inflight.wait(&revoked, Duration::from_secs(30)) {
                    // Still safe: a late claim of ours races the new owner's for the same start,
                    // and If-None-Match lets exactly one exist.
                    log::warn!("sink: revoked while a write is still in flight");
                }
                for p in revoked {
                    self.push(Event::Revoked(p));
                }
                let _ = consumer.unassign();
            }
            other => {
                log::error!("sink: rebalance error {other:?}");
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Harmless for correctness: claims, not offsets, decide where a partition resumes.
            log::warn!("sink: offset commit failed: {e}");
        }
    }
}

impl SinkContext {
    fn push(&self, e: Event) {
        if let Ok(mut ev) = self.events.lock() {
            ev.push(e);
        }
    }

    fn resume_with_retry(&self, partition: i32, committed: Option<i64>) -> Resume {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.rt.block_on(claims::resume(
                &self.store,
                &self.topic,
                partition,
                committed,
            )) {
                Ok(r) => return r,
                Err(e) => {
                    log::warn!("sink: cannot read claims of partition {partition} ({e}); retrying in {delay:?}");
                    if self.shutdown.is_triggered() {
                        // Consuming nothing is safe; guessing a position is not.
                        return Resume {
                            offset: committed,
                            adopt: None,
                        };
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The sink's consumer settings: the typed ones ([`client_config`]) and its prefetch, which a
/// user's `[kafka] librdkafka` setting of the same key overrides.
pub fn consumer_config(kcfg: &KafkaConfig) -> Result<ClientConfig> {
    let mut config = client_config(kcfg, Role::Consumer).map_err(crate::kafka::Error::from)?;
    // Prefetch up to 64 MB, and fetch again as soon as the loop has taken records off the queue:
    // librdkafka's default postpones the next fetch by a second once a partition's queue passed
    // `queued.min.messages`, which starves a loop that drains 100k records in a fraction of that.
    // A fetch for partitions at the end of their log waits at the broker for new records, and a
    // partition resumed meanwhile (after `max_buffered_records`) is fetched only once it returns:
    // with librdkafka's 500 ms, catching up stalled that long at every resume.
    for (key, value) in [
        ("queued.max.messages.kbytes", "65536"),
        ("queued.min.messages", "1000000"),
        ("fetch.queue.backoff.ms", "20"),
        ("fetch.wait.max.ms", "100"),
    ] {
        if !kcfg.librdkafka.contains_key(key) {
            config.set(key, value);
        }
    }
    Ok(config)
}

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
            if now.duration_since(last_gauges) >= Duration::from_secs(2) {
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
        self.metrics.set("lag", lag as u64);
        self.metrics.set_labelled("lag_p", per_partition);
    }
}

enum Written {
    Done {
        objects: usize,
        bytes: usize,
    },
    /// A longer claim exists for this start: keep consuming until its end.
    NeedMore(Claim),
    /// A shorter claim exists: write exactly its extent, the rest goes to the next batch.
    Split(Claim),
}

/// Batches queued for a partition are claimed and written together, up to this many...
const RUN_MAX_BATCHES: usize = 64;
/// ...and this many bytes of lines.
const RUN_MAX_BYTES: usize = 32 << 20;
/// Objects of one claim written at once.
const PUTS_IN_FLIGHT: usize = 16;

/// The data objects of a batch: one per cut and trade day, named by topic, partition and the
/// cut's offsets.
fn objects_of<'a>(
    raw_prefix: &str,
    topic: &str,
    p: i32,
    lines: &'a [Line],
    cuts: &[(i64, i64)],
    gzip: bool,
) -> BTreeMap<String, Vec<&'a Line>> {
    let ext = if gzip { "jsonl.gz" } else { "jsonl" };
    let mut objects = BTreeMap::new();
    let mut rest = lines;
    for &(start, end) in cuts {
        // Lines are in offset order: this cut's are a prefix of the rest.
        let n = rest.partition_point(|l| l.offset <= end);
        let (mine, later) = rest.split_at(n);
        rest = later;
        let mut by_day: BTreeMap<Day, Vec<&Line>> = BTreeMap::new();
        for l in mine {
            by_day
                .entry(l.day)
                .or_insert_with(|| Vec::with_capacity(mine.len()))
                .push(l);
        }
        for (day, lines) in by_day {
            let key = format!(
                "{raw_prefix}/{}/{}+{p}+{start:020}-{end:020}.{ext}",
                day.path(),
                claims::sanitize(topic),
            );
            objects.insert(key, lines);
        }
    }
    objects
}

async fn write_batch(
    store: &Store,
    topic: &str,
    p: i32,
    cfg: &SinkConfig,
    batch: &Batch,
) -> Result<Written> {
    let mut objects = objects_of(
        &cfg.raw_prefix,
        topic,
        p,
        &batch.lines,
        &batch.cuts,
        cfg.gzip,
    );
    if batch.adopted.is_none() {
        let claim = Claim {
            topic: topic.to_string(),
            partition: p,
            start: batch.start,
            end: batch.end,
            objects: objects.keys().cloned().collect(),
            records: batch.lines.len(),
            batches: if batch.cuts.len() > 1 {
                batch.cuts.iter().map(|&(s, e)| [s, e]).collect()
            } else {
                Vec::new()
            },
        };
        match claims::try_claim(store, &claim).await? {
            Claimed::Ours => {}
            // Same extent (our own claim from an earlier attempt, or a racing owner's): its cuts win.
            Claimed::Theirs(theirs) if theirs.end == batch.end => {
                let cuts = theirs.cuts();
                if cuts != batch.cuts {
                    objects = objects_of(&cfg.raw_prefix, topic, p, &batch.lines, &cuts, cfg.gzip);
                }
            }
            Claimed::Theirs(theirs) if theirs.end > batch.end => {
                return Ok(Written::NeedMore(theirs))
            }
            Claimed::Theirs(theirs) => return Ok(Written::Split(theirs)),
        }
    }
    // A body is encoded when its PUT starts: a run holds at most PUTS_IN_FLIGHT bodies at once.
    let count = objects.len();
    let mut waiting = objects.into_iter();
    let mut running = FuturesUnordered::new();
    let mut bytes = 0;
    loop {
        while running.len() < PUTS_IN_FLIGHT {
            let Some((key, lines)) = waiting.next() else {
                break;
            };
            let body = encode::jsonl(&lines, cfg.gzip);
            bytes += body.len();
            running.push(async move { store.put(&key, body, false).await });
        }
        match running.next().await {
            Some(put) => {
                put?;
            }
            None => break,
        }
    }
    Ok(Written::Done {
        objects: count,
        bytes,
    })
}
