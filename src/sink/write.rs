//! Writing one partition's batch: its objects (one per cut and trade day), the claim that makes
//! its extent durable first, then the PUTs.

use super::claims::{self, Claim, Claimed};
use super::encode::{self, Day, Line};
use super::partition::Batch;
use super::Result;
use crate::config::SinkConfig;
use crate::store::Store;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;

pub(super) enum Written {
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
pub(super) const RUN_MAX_BATCHES: usize = 64;
/// ...and this many bytes of lines.
pub(super) const RUN_MAX_BYTES: usize = 32 << 20;
/// Objects of one claim written at once.
pub(super) const PUTS_IN_FLIGHT: usize = 16;

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

/// Claims a batch's extent (unless it completes a claim already found) and writes its objects,
/// [`PUTS_IN_FLIGHT`] at a time; what an existing claim says about the same start wins.
pub(super) async fn write_batch(
    store: &Store,
    topic: &str,
    p: i32,
    cfg: &SinkConfig,
    batch: &Batch,
) -> Result<Written> {
    let honoured = match &batch.adopted {
        Some(claim) => claim.clone(),
        None => {
            let objects = objects_of(
                &cfg.raw_prefix,
                topic,
                p,
                &batch.lines,
                &batch.cuts,
                cfg.gzip,
            );
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
                Claimed::Ours => {
                    failpoint("after_claim");
                    return put_all(store, objects, cfg.gzip, false).await;
                }
                // Same extent (our own claim from an earlier attempt, or a racing owner's).
                Claimed::Theirs(theirs) if theirs.end == batch.end => theirs,
                Claimed::Theirs(theirs) if theirs.end > batch.end => {
                    return Ok(Written::NeedMore(theirs))
                }
                Claimed::Theirs(theirs) => return Ok(Written::Split(theirs)),
            }
        }
    };
    // An existing claim is rewritten as it was made: its cuts, its prefix and compression.
    let (prefix, gzip) = honoured
        .layout()
        .unwrap_or((cfg.raw_prefix.as_str(), cfg.gzip));
    let objects = objects_of(prefix, topic, p, &batch.lines, &honoured.cuts(), gzip);
    // Records the claim had may be gone from Kafka (retention, DeleteRecords, compaction): its
    // objects can no longer be made byte for byte, so one that exists is kept (it was written
    // whole) and only a missing one is written, with what remains.
    let complete = batch.lines.len() == honoured.records
        && (honoured.objects.is_empty() || objects.keys().eq(honoured.objects.iter()));
    if !complete {
        log::warn!(
            "sink: partition {p} offsets {}..={}: {} of the claim's {} records are still in Kafka; \
             its objects already written are kept, missing ones are written with what remains",
            honoured.start,
            honoured.end,
            batch.lines.len(),
            honoured.records
        );
    }
    put_all(store, objects, gzip, !complete).await
}

/// Writes the objects, [`PUTS_IN_FLIGHT`] at a time (`keep`: an existing object is left as is).
async fn put_all(
    store: &Store,
    objects: BTreeMap<String, Vec<&Line>>,
    gzip: bool,
    keep: bool,
) -> Result<Written> {
    // A body is encoded when its PUT starts: a run holds at most PUTS_IN_FLIGHT bodies at once.
    let count = objects.len();
    let mut waiting = objects.into_iter();
    let mut running = FuturesUnordered::new();
    let mut bytes = 0;
    let mut written = 0;
    loop {
        while running.len() < PUTS_IN_FLIGHT {
            let Some((key, lines)) = waiting.next() else {
                break;
            };
            let body = encode::jsonl(&lines, gzip);
            bytes += body.len();
            running.push(async move { store.put(&key, body, keep).await });
        }
        match running.next().await {
            Some(put) => {
                put?;
                written += 1;
                if written == 1 && count > 1 {
                    failpoint("between_objects");
                }
            }
            None => break,
        }
    }
    failpoint("before_commit");
    Ok(Written::Done {
        objects: count,
        bytes,
    })
}

/// Test hook: `STOCKPIPE_FAILPOINT=NAME` (or `NAME:N`, the N-th time) ends the process at
/// once at that step of a write, as a crash would (`after_claim`, `between_objects`:
/// one object of several written, `before_commit`), so tests choose their crash points instead of sleeping at random.
fn failpoint(name: &str) {
    static ARMED: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("STOCKPIPE_FAILPOINT").ok()?;
        let (n, at) = v.split_once(':').unwrap_or((&v, "1"));
        Some((n.to_string(), at.parse().unwrap_or(1)))
    });
    if let Some((n, at)) = armed {
        if n == name && HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *at {
            log::error!("sink: fail-point {name} reached; aborting");
            std::process::abort();
        }
    }
}
