//! The sink's consumer loop: one thread polls Kafka, batches per partition, writes through the
//! claim protocol, and commits offsets only after the objects are durable.

use super::claims::{self, Claim, Claimed, Resume};
use super::encode::{self, Day, Line};
use super::partition::{Batch, PartitionState};
use super::Result;
use crate::config::{KafkaConfig, S3Config, SinkConfig};
use crate::kafka::config::{client_config, Role};
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Encryption, Store};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

enum Event {
    Assigned(i32, Resume),
    Revoked(i32),
}

/// Receives rebalances on the polling thread: decides where each new partition resumes
/// (committed offset and claims), and tells the loop what it gained and lost.
struct SinkContext {
    store: Store,
    topic: String,
    rt: Handle,
    events: Mutex<Vec<Event>>,
    shutdown: Shutdown,
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
                    self.push(Event::Assigned(p, resume));
                }
                if let Err(e) = consumer.assign(tpl) {
                    log::error!("sink: assign failed: {e}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for e in tpl.elements() {
                    self.push(Event::Revoked(e.partition()));
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
    let encryption = Encryption::from_config(&scfg.sse, scfg.sse_kms_key_id.as_deref());
    let store = rt.block_on(Store::open(&scfg.output, s3, encryption))?;
    // Dead letters need somewhere to go (brokers may not auto-create topics).
    rt.block_on(crate::kafka::ensure_topics(
        kcfg,
        &[(kcfg.dlq_topic.clone(), 1)],
        Duration::from_secs(30),
    ))?;
    log::info!("sink: {} → {}", kcfg.topic, store.describe());
    let context = SinkContext {
        store: store.clone(),
        topic: kcfg.topic.clone(),
        rt: rt.clone(),
        events: Mutex::new(Vec::new()),
        shutdown: shutdown.clone(),
    };
    let mut config = client_config(kcfg, Role::Consumer).map_err(crate::kafka::Error::from)?;
    config.set("queued.max.messages.kbytes", "65536");
    let consumer: BaseConsumer<SinkContext> = config.create_with_context(context)?;
    consumer.subscribe(&[&kcfg.topic])?;
    let dlq = TradeProducer::new(kcfg, Metrics::new(crate::kafka::producer::COUNTERS))?;
    let mut sink = Sink {
        cfg: scfg.clone(),
        topic: kcfg.topic.clone(),
        store,
        rt,
        metrics,
        parts: BTreeMap::new(),
        dlq,
    };
    sink.run(&consumer, &shutdown);
    Ok(())
}

struct Sink {
    cfg: SinkConfig,
    topic: String,
    store: Store,
    rt: Handle,
    metrics: Arc<Metrics>,
    parts: BTreeMap<i32, PartitionState>,
    dlq: TradeProducer,
}

impl Sink {
    fn run(&mut self, consumer: &BaseConsumer<SinkContext>, shutdown: &Shutdown) {
        let size = self.cfg.batch_size;
        let bytes = self.cfg.batch_bytes;
        let age = Duration::from_secs_f64(self.cfg.batch_seconds);
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let draining = shutdown.is_triggered();
            if draining && drain_deadline.is_none() {
                log::info!("sink: stopping; writing what is buffered");
                drain_deadline = Some(Instant::now() + Duration::from_secs(30));
            }
            let polled = consumer.poll(Duration::from_millis(if draining { 0 } else { 100 }));
            self.apply_rebalances(consumer);
            if !draining {
                match polled {
                    Some(Ok(m)) => self.accept(consumer, &m),
                    Some(Err(e)) => {
                        self.metrics.incr("kafka_errors");
                        log::warn!("sink: consumer error: {e}");
                    }
                    None => {}
                }
            }
            let now = Instant::now();
            let partitions: Vec<i32> = self.parts.keys().copied().collect();
            for p in partitions {
                let Some(st) = self.parts.get_mut(&p) else {
                    continue;
                };
                if st.pending.is_none() {
                    if let Some(why) = st.should_close(size, bytes, age, draining, now) {
                        log::debug!("sink: partition {p} batch closes ({why:?})");
                        st.pending = st.take();
                    }
                }
                if st.pending.is_some() && now >= st.retry_at {
                    self.flush(consumer, p);
                }
            }
            if now.duration_since(last_gauges) >= Duration::from_secs(2) {
                last_gauges = now;
                self.update_gauges(consumer, now);
            }
            if draining {
                let idle = self.parts.values().all(|s| {
                    s.pending.is_none() && s.should_close(size, bytes, age, true, now).is_none()
                });
                if idle || drain_deadline.is_some_and(|d| now >= d) {
                    break;
                }
            }
        }
        self.update_gauges(consumer, Instant::now());
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        let _ = self.dlq.flush(Duration::from_secs(5));
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
                    self.parts
                        .insert(p, PartitionState::new(p, resume.offset, resume.adopt));
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

    fn accept(
        &mut self,
        consumer: &BaseConsumer<SinkContext>,
        m: &rdkafka::message::BorrowedMessage<'_>,
    ) {
        let p = m.partition();
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let offset = m.offset();
        let line = match encode::encode(m.payload(), p, offset, m.timestamp().to_millis()) {
            Ok(l) => Some(l),
            Err(reason) => {
                self.metrics.incr("dlq");
                let raw = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let stage = format!("sink partition {p} offset {offset}");
                self.rt
                    .block_on(self.dlq.send_dead_letter(reason.as_str(), &raw, &stage));
                None
            }
        };
        if st.push(offset, line) {
            self.metrics.incr("records_in");
        } else {
            self.metrics.incr("redelivered");
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

    /// Writes the pending batch of partition `p`; on failure schedules a retry with backoff and
    /// pauses the partition so memory stays bounded while storage is away.
    fn flush(&mut self, consumer: &BaseConsumer<SinkContext>, p: i32) {
        let Some(batch) = self.parts.get_mut(&p).and_then(|s| s.pending.take()) else {
            return;
        };
        match self
            .rt
            .block_on(write_batch(&self.store, &self.topic, p, &self.cfg, &batch))
        {
            Ok(Written::Done { objects, bytes }) => {
                let st = self.parts.get_mut(&p).expect("partition present");
                st.backoff = Duration::ZERO;
                let was_paused = st.paused;
                self.metrics.incr("batches");
                self.metrics.add("objects", objects as u64);
                self.metrics.add("bytes", bytes as u64);
                self.metrics
                    .add("records_written", batch.lines.len() as u64);
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(batch.end + 1));
                if consumer.commit(&tpl, CommitMode::Async).is_ok() {
                    self.metrics.incr("commits");
                }
                if was_paused {
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
                    st.pending = st.take();
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
                st.pending = Some(batch);
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
        let topic = std::ffi::CString::new(self.topic.as_str()).unwrap_or_default();
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

/// The data objects of a batch: one per trade day, named by topic, partition and offsets.
fn objects_of<'a>(
    raw_prefix: &str,
    topic: &str,
    p: i32,
    batch: &'a Batch,
    gzip: bool,
) -> BTreeMap<String, Vec<&'a Line>> {
    let mut by_day: BTreeMap<Day, Vec<&Line>> = BTreeMap::new();
    for l in &batch.lines {
        by_day.entry(l.day).or_default().push(l);
    }
    let ext = if gzip { "jsonl.gz" } else { "jsonl" };
    by_day
        .into_iter()
        .map(|(day, lines)| {
            let key = format!(
                "{raw_prefix}/{}/{}+{p}+{:020}-{:020}.{ext}",
                day.path(),
                claims::sanitize(topic),
                batch.start,
                batch.end
            );
            (key, lines)
        })
        .collect()
}

async fn write_batch(
    store: &Store,
    topic: &str,
    p: i32,
    cfg: &SinkConfig,
    batch: &Batch,
) -> Result<Written> {
    let objects = objects_of(&cfg.raw_prefix, topic, p, batch, cfg.gzip);
    if batch.adopted.is_none() {
        let claim = Claim {
            topic: topic.to_string(),
            partition: p,
            start: batch.start,
            end: batch.end,
            objects: objects.keys().cloned().collect(),
            records: batch.lines.len(),
        };
        match claims::try_claim(store, &claim).await? {
            Claimed::Ours => {}
            Claimed::Theirs(theirs) if theirs.end == batch.end => {}
            Claimed::Theirs(theirs) if theirs.end > batch.end => {
                return Ok(Written::NeedMore(theirs))
            }
            Claimed::Theirs(theirs) => return Ok(Written::Split(theirs)),
        }
    }
    let mut bytes = 0;
    let mut count = 0;
    for (key, lines) in &objects {
        let body = encode::jsonl(lines, cfg.gzip);
        bytes += body.len();
        store.put(key, body, false).await?;
        count += 1;
    }
    Ok(Written::Done {
        objects: count,
        bytes,
    })
}
