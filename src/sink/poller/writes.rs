//! A partition's writes: each starts on the runtime, and its outcome comes back to the polling
//! thread, which commits after a success, adopts a claim found in the way, or retries with backoff.

use super::Sink;
use crate::sink::partition::Batch;
use crate::sink::rebalance::SinkContext;
use crate::sink::write::{write_batch, Written, RUN_MAX_BATCHES, RUN_MAX_BYTES};
use crate::sink::Result;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// A finished write, handed back to the polling thread.
pub(super) struct Done {
    partition: i32,
    generation: u64,
    batch: Batch,
    result: Result<Written>,
    /// When the write ended (µs since the epoch).
    ended_us: u64,
}

impl Sink {
    /// Starts writing the pending batch of partition `p` on the runtime; [`Sink::finish`] takes
    /// the outcome back on this thread.
    pub(super) fn start_write(&mut self, p: i32) {
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
                ended_us: crate::record::now_us(),
            });
            inflight.end(p);
        });
    }

    /// Applies a finished write: commit after success; on failure schedule a retry with backoff
    /// and pause the partition so memory stays bounded while storage is away. A write for a
    /// partition revoked meanwhile is ignored (its next owner honours the claim).
    pub(super) fn finish(&mut self, consumer: &BaseConsumer<SinkContext>, done: Done) {
        let Done {
            partition: p,
            generation,
            batch,
            result,
            ended_us,
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
                // Partitions' writes end in any order; keep the latest.
                self.metrics.raise("last_write_unix_us", ended_us);
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
                let st = self.parts.get_mut(&p).expect("partition present");
                st.unread(batch, claim);
                // The records up to the claim's end must be read before anything is written.
                if st.paused {
                    self.pause(consumer, p, false);
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
}
