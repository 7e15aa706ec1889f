//! The sink's Kafka consumer: its settings, and the rebalance callbacks that decide where each
//! newly assigned partition resumes (its committed offset and the claims) and wait, on a revoke,
//! until no write of the partition is still in flight.

use super::claims::{self, Resume};
use super::fetch::Route;
use super::Result;
use crate::config::KafkaConfig;
use crate::kafka::config::{client_config, Role};
use crate::shutdown::Shutdown;
use crate::store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

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

pub(super) enum Event {
    Assigned(i32, Resume),
    Revoked(i32),
}

/// The partitions with a write in flight. A revoke waits here, so a partition's old owner has
/// stopped writing before its new owner resumes from the claims.
#[derive(Default)]
pub(super) struct InFlight {
    /// Writes in flight per partition: a count, since a write of an earlier assignment that
    /// outlived its revoke may still end while the partition's next write runs.
    partitions: Mutex<BTreeMap<i32, usize>>,
    done: Condvar,
}

impl InFlight {
    pub(super) fn begin(&self, p: i32) {
        if let Ok(mut s) = self.partitions.lock() {
            *s.entry(p).or_default() += 1;
        }
    }

    pub(super) fn end(&self, p: i32) {
        if let Ok(mut s) = self.partitions.lock() {
            if let Some(n) = s.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    s.remove(&p);
                }
            }
        }
        self.done.notify_all();
    }

    /// Waits until none of `ps` has a write in flight, or `limit` passes (false).
    pub(super) fn wait(&self, ps: &[i32], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Ok(mut s) = self.partitions.lock() else {
            return false;
        };
        while ps.iter().any(|p| s.contains_key(p)) {
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
pub(super) struct SinkContext {
    pub(super) store: Store,
    pub(super) topic: String,
    pub(super) rt: Handle,
    pub(super) events: Mutex<Vec<Event>>,
    pub(super) shutdown: Shutdown,
    pub(super) inflight: Arc<InFlight>,
    /// Where assigned partitions' records go (the loop's [`Fetch`](super::fetch::Fetch)).
    pub(super) route: Route,
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
                // librdkafka keeps a partition the application paused paused across a revoke
                // and a new assignment, while the loop starts it afresh, unpaused: one paused
                // when revoked would never be fetched again.
                if let Err(e) = consumer.resume(tpl) {
                    log::error!("sink: resuming assigned partitions failed: {e}");
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
