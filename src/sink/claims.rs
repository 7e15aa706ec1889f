//! Claims: how the sink writes every record exactly once although a wall-clock timer decides
//! where batches end (see `docs/sink-exactly-once.md`).
//!
//! Before writing a batch covering offsets `start..=end` of a partition, the sink creates the
//! claim object `_stockpipe/claims/<topic>/<partition>/<start>.json` *only if absent*. The
//! claim fixes the batch's extent (and, for a claim covering several queued batches, each
//! batch's extent) for ever: whoever finds an existing claim for the offset it
//! is about to write from (a restarted sink, the next owner after a rebalance) adopts it and
//! rewrites exactly those objects from exactly those records, byte for byte. So a crash at any
//! instant leaves either no claim (nothing was written; the records are consumed again) or a
//! claim whose objects are written again identically.

use crate::store::{Put, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    /// Keys of the data objects of this claim (one per batch and trade day).
    pub objects: Vec<String>,
    pub records: usize,
    /// The batches this claim covers, `[start, end]` each, in order, when more than one: a sink
    /// behind its input claims the batches queued for a partition at once and writes their
    /// objects in parallel. Empty: one batch, `start..=end`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<[i64; 2]>,
}

impl Claim {
    /// The extents of the claim's batches, in order.
    pub fn cuts(&self) -> Vec<(i64, i64)> {
        if self.batches.is_empty() {
            vec![(self.start, self.end)]
        } else {
            self.batches.iter().map(|b| (b[0], b[1])).collect()
        }
    }
}

pub fn claims_prefix(topic: &str, partition: i32) -> String {
    format!("_stockpipe/claims/{}/{partition:05}/", sanitize(topic))
}

pub fn claim_key(topic: &str, partition: i32, start: i64) -> String {
    format!("{}{start:020}.json", claims_prefix(topic, partition))
}

/// Topic names are `[a-zA-Z0-9._-]`; keep keys safe for any store anyway.
pub fn sanitize(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The outcome of trying to claim a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    Ours,
    /// Somebody claimed this start offset first; its extent wins.
    Theirs(Claim),
}

pub async fn try_claim(store: &Store, claim: &Claim) -> crate::store::Result<Claimed> {
    let key = claim_key(&claim.topic, claim.partition, claim.start);
    let body = serde_json::to_vec(claim).unwrap_or_default();
    match store.put(&key, body, true).await? {
        Put::Created => Ok(Claimed::Ours),
        Put::AlreadyExists => {
            let existing = read_claim(store, &key).await?;
            Ok(existing.map(Claimed::Theirs).unwrap_or(Claimed::Ours))
        }
    }
}

async fn read_claim(store: &Store, key: &str) -> crate::store::Result<Option<Claim>> {
    Ok(store
        .get(key)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Where a newly assigned partition resumes, and the claim (if any) it must honour first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub offset: Option<i64>,
    pub adopt: Option<Claim>,
}

/// Decides where to resume from the committed offset and the claims in the store.
///
/// Claims are written strictly in order per partition, and a claim is only made after the
/// previous batch's objects are durable, so among the claims at or after the committed offset
/// only the last can be incomplete: resume at its start and rewrite it.
pub async fn resume(
    store: &Store,
    topic: &str,
    partition: i32,
    committed: Option<i64>,
) -> crate::store::Result<Resume> {
    let prefix = claims_prefix(topic, partition);
    let after = committed.map(|c| claim_key(topic, partition, c.saturating_sub(1)));
    let listed = store.list(&prefix, after.as_deref()).await?;
    let last = listed.iter().rev().find(|m| m.key.ends_with(".json"));
    let Some(last) = last else {
        return Ok(Resume {
            offset: committed,
            adopt: None,
        });
    };
    let claim = read_claim(store, &last.key).await?;
    match claim {
        Some(c) if committed.is_none_or(|off| c.start >= off) => Ok(Resume {
            offset: Some(c.start),
            adopt: Some(c),
        }),
        _ => Ok(Resume {
            offset: committed,
            adopt: None,
        }),
    }
}
