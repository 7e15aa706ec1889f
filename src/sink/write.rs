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
