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

    /// The raw prefix and compression its objects were named with, so that honouring the claim
    /// rewrites the same keys whatever the settings are now. None when it names no object.
    pub fn layout(&self) -> Option<(&str, bool)> {
        let key = self.objects.first()?;
        let prefix = &key[..key.rfind("/year=")?];
        Some((prefix, key.ends_with(".gz")))
    }
}

pub fn claims_prefix(topic: &str, partition: i32) -> String {
    format!("_stockpipe/claims/{}/{partition:05}/", sanitize(topic))
}

pub fn claim_key(topic: &str, partition: i32, start: i64) -> String {
    format!("{}{start:020}.json", claims_prefix(topic, partition))
}

/// A claim's name is its start offset, 20 digits: anything else in the folder is not a claim.
fn is_claim_key(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.strip_suffix(".json")
        .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
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
        // The claim that exists decides, so it must be read: one that vanished or does not parse
        // is an error (the write is retried), never taken as ours, which would let two writers
        // cut the same records differently.
        Put::AlreadyExists => read_claim(store, &key).await.map(Claimed::Theirs),
    }
}

async fn read_claim(store: &Store, key: &str) -> crate::store::Result<Claim> {
    let unreadable = |why: String| crate::store::Error::Unreadable {
        key: key.to_string(),
        why,
    };
    let bytes = store
        .get(key)
        .await?
        .ok_or_else(|| unreadable("exists for a conditional write but not for a read".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not a claim ({e})")))
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
    let last = listed.iter().rev().find(|m| is_claim_key(&m.key));
    let Some(last) = last else {
        return Ok(Resume {
            offset: committed,
            adopt: None,
        });
    };
    let claim = read_claim(store, &last.key).await?;
    if committed.is_none_or(|off| claim.start >= off) {
        Ok(Resume {
            offset: Some(claim.start),
            adopt: Some(claim),
        })
    } else {
        Ok(Resume {
            offset: committed,
            adopt: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_file_store as file_store;

    fn claim(start: i64, end: i64, objects: &[&str]) -> Claim {
        Claim {
            topic: "t".into(),
            partition: 0,
            start,
            end,
            objects: objects.iter().map(|s| s.to_string()).collect(),
            records: (end - start + 1) as usize,
            batches: vec![],
        }
    }

    #[tokio::test]
    async fn an_existing_claim_that_cannot_be_read_is_an_error_never_ours() {
        let store = file_store().await;
        let c = claim(0, 9, &[]);
        store
            .put(&claim_key("t", 0, 0), b"{not json".to_vec(), false)
            .await
            .unwrap();
        let got = try_claim(&store, &c).await;
        assert!(
            matches!(got, Err(crate::store::Error::Unreadable { .. })),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn resume_reads_only_claims_not_other_files_in_their_folder() {
        let store = file_store().await;
        assert_eq!(
            try_claim(&store, &claim(0, 9, &[])).await.unwrap(),
            Claimed::Ours
        );
        let stray = format!("{}notes.json", claims_prefix("t", 0));
        store.put(&stray, b"hello".to_vec(), false).await.unwrap();
        let r = resume(&store, "t", 0, None).await.unwrap();
        assert_eq!((r.offset, r.adopt.map(|c| c.end)), (Some(0), Some(9)));
    }

    #[test]
    fn a_claim_knows_the_prefix_and_compression_of_its_objects() {
        let c = claim(
            0,
            9,
            &["raw/v1/year=2026/month=12/day=06/t+0+00000000000000000000-00000000000000000009.jsonl.gz"],
        );
        assert_eq!(c.layout(), Some(("raw/v1", true)));
        assert_eq!(claim(0, 9, &[]).layout(), None);
    }
}
