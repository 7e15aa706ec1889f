//! Per-partition batching: records accumulate until the batch closes on count, bytes, age, or
//! the extent of a claim being honoured.

use super::claims::Claim;
use super::encode::Line;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why a batch closed (reported in debug logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Count,
    Bytes,
    Age,
    Claim,
    Drain,
}

/// When an open batch closes: at this many records, this many bytes of lines, or this age.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub records: usize,
    pub bytes: usize,
    pub age: Duration,
}

/// A closed batch: every offset in `start..=end` was consumed; `lines` are those that encode.
/// A batch written with others under one claim is a run of batches: `cuts` are their extents
/// (one object per cut and trade day).
#[derive(Debug, Clone)]
pub struct Batch {
    pub start: i64,
    pub end: i64,
    pub cuts: Vec<(i64, i64)>,
    pub lines: Vec<Line>,
    pub adopted: Option<Claim>,
    pub opened_at: Instant,
    /// A write of this batch was attempted: its claim may exist, so its extent is final.
    pub attempted: bool,
}

impl Batch {
    /// Not honouring a claim and never attempted: its extent may still grow into a run.
    pub fn is_fresh(&self) -> bool {
        self.adopted.is_none() && !self.attempted
    }
}

/// Bytes the lines take in an object (each with its newline).
fn lines_bytes(lines: &[Line]) -> usize {
    lines.iter().map(|l| l.text.len() + 1).sum()
}

#[derive(Debug)]
pub struct PartitionState {
    pub partition: i32,
    /// The next offset this sink expects; lower ones are duplicates of what it already has.
    pub next_offset: Option<i64>,
    start: Option<i64>,
    end: i64,
    records: usize,
    lines: Vec<Line>,
    bytes: usize,
    opened_at: Option<Instant>,
    /// A claim found for our resume offset: the batch must end exactly where it ends.
    pub adopt: Option<Claim>,
    /// Closed batches waiting to be written, oldest first.
    pub pending: VecDeque<Batch>,
    /// The batch being written (records, opened at): at most one per partition, since claims
    /// are made strictly in order.
    pub inflight: Option<(usize, Instant)>,
    /// Which assignment this state belongs to: a write finishing after a revoke is ignored.
    pub generation: u64,
    pub retry_at: Instant,
    pub backoff: Duration,
    pub paused: bool,
}

impl PartitionState {
    pub fn new(partition: i32, next_offset: Option<i64>, adopt: Option<Claim>) -> Self {
        Self::with_generation(partition, next_offset, adopt, 0)
    }

    pub fn with_generation(
        partition: i32,
        next_offset: Option<i64>,
        adopt: Option<Claim>,
        generation: u64,
    ) -> Self {
        Self {
            partition,
            next_offset,
            start: None,
            end: -1,
            records: 0,
            lines: Vec::new(),
            bytes: 0,
            opened_at: None,
            adopt,
            pending: VecDeque::new(),
            inflight: None,
            generation,
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
            paused: false,
        }
    }

    /// Accepts the record at `offset` (already encoded, or `None` when it went to the DLQ).
    /// Returns false for an offset this partition already has (a re-delivery).
    pub fn push(&mut self, offset: i64, line: Option<Line>) -> bool {
        if self.next_offset.is_some_and(|n| offset < n) {
            return false;
        }
        if self.start.is_none() {
            // A batch starts where the previous one ended (or where the partition resumed), not
            // at the first record delivered: offsets a consumer never sees (transaction markers,
            // aborted or compacted records) would otherwise let two writers claim the same
            // records under different start offsets.
            self.start = Some(self.next_offset.unwrap_or(offset));
            self.opened_at = Some(Instant::now());
        }
        self.next_offset = Some(offset + 1);
        self.end = offset;
        self.records += 1;
        if let Some(line) = line {
            self.bytes += line.text.len() + 1;
            self.lines.push(line);
        }
        true
    }

    /// Holds more than `max` records and may pause for it. A partition honouring a claim must
    /// read up to the claim's end first, however far that is: pausing it would stall it for good.
    pub fn over(&self, max: usize) -> bool {
        self.adopt.is_none() && self.buffered() > max
    }

    pub fn buffered(&self) -> usize {
        self.records
            + self.pending.iter().map(|b| b.lines.len()).sum::<usize>()
            + self.inflight.map_or(0, |(n, _)| n)
    }

    /// Age of the oldest record held (buffered or waiting to be written).
    pub fn oldest_age(&self, now: Instant) -> Option<Duration> {
        let pending = self.pending.front().map(|b| b.opened_at);
        let inflight = self.inflight.map(|(_, t)| t);
        inflight
            .or(pending)
            .or(self.opened_at)
            .map(|t| now.duration_since(t))
    }

    /// Whether the open batch should close now, and why.
    pub fn should_close(&self, policy: &Policy, draining: bool, now: Instant) -> Option<Close> {
        let start = self.start?;
        if let Some(claim) = &self.adopt {
            // An adopted claim closes only at its own end, never earlier.
            return (start <= claim.start && self.end >= claim.end).then_some(Close::Claim);
        }
        if self.records >= policy.records {
            Some(Close::Count)
        } else if self.bytes >= policy.bytes {
            Some(Close::Bytes)
        } else if self
            .opened_at
            .is_some_and(|t| now.duration_since(t) >= policy.age)
        {
            Some(Close::Age)
        } else if draining {
            Some(Close::Drain)
        } else {
            None
        }
    }

    /// Closes the open batch. With an adopted claim, records past its end stay buffered and
    /// start the next batch.
    pub fn take(&mut self) -> Option<Batch> {
        let start = self.start?;
        let opened_at = self.opened_at.unwrap_or_else(Instant::now);
        let adopted = self.adopt.take();
        let cut = adopted.as_ref().map_or(self.end, |c| c.end);
        // Lines are in offset order: the batch is a prefix. The next batch is sized like this one.
        let mut lines = std::mem::take(&mut self.lines);
        let rest = lines.split_off(lines.partition_point(|l| l.offset <= cut));
        let capacity = lines.len();
        let start = adopted.as_ref().map_or(start, |c| c.start);
        let batch = Batch {
            start,
            end: cut,
            cuts: adopted.as_ref().map_or(vec![(start, cut)], Claim::cuts),
            lines,
            adopted,
            opened_at,
            attempted: false,
        };
        let old_end = self.end;
        self.start = None;
        self.end = -1;
        self.records = 0;
        self.bytes = 0;
        self.opened_at = None;
        if old_end > cut {
            self.start = Some(cut + 1);
            self.end = old_end;
            self.records = (old_end - cut) as usize;
            self.bytes = lines_bytes(&rest);
            self.lines = rest;
            self.opened_at = Some(Instant::now());
        }
        self.lines
            .reserve(capacity.saturating_sub(self.lines.len()));
        Some(batch)
    }

    /// The next write: the oldest closed batch and, when it is a fresh one, the fresh batches
    /// queued behind it, up to `max_batches` and `max_bytes`, as one run under one claim.
    /// (A batch honouring a claim, or one whose write failed, goes alone: its extent is fixed.)
    pub fn next_write(&mut self, max_batches: usize, max_bytes: usize) -> Option<Batch> {
        let mut run = self.pending.pop_front()?;
        if !run.is_fresh() {
            return Some(run);
        }
        // Which batches join (a fresh batch is one cut), then move their lines in once.
        let mut bytes = lines_bytes(&run.lines);
        let (mut joining, mut records) = (0, 0);
        for next in self.pending.iter().take(max_batches.saturating_sub(1)) {
            let more = lines_bytes(&next.lines);
            if !next.is_fresh() || bytes + more > max_bytes {
                break;
            }
            bytes += more;
            records += next.lines.len();
            joining += 1;
        }
        run.lines.reserve(records);
        for next in self.pending.drain(..joining) {
            debug_assert_eq!(next.start, run.end + 1);
            run.end = next.end;
            run.cuts.extend(next.cuts);
            run.lines.extend(next.lines);
        }
        Some(run)
    }

    /// Puts a batch back in front of the open one (and of any batch closed after it): a claim
    /// found at write time differs from the batch, so its extent must be re-cut.
    pub fn unread(&mut self, batch: Batch, claim: Claim) {
        self.reopen_pending();
        let mut lines = batch.lines;
        let later = std::mem::take(&mut self.lines);
        let (end, records) = (
            self.end.max(batch.end),
            (self.end.max(batch.end) - batch.start + 1) as usize,
        );
        self.start = Some(batch.start);
        self.end = end;
        self.records = records;
        lines.extend(later);
        self.bytes = lines_bytes(&lines);
        self.lines = lines;
        self.opened_at = Some(batch.opened_at);
        self.adopt = Some(claim);
    }

    /// Merges the closed-but-unwritten batches back into the open one, in offset order.
    fn reopen_pending(&mut self) {
        let Some(first) = self.pending.front() else {
            return;
        };
        let start = first.start;
        let opened_at = first.opened_at;
        let last_end = self.pending.back().map_or(-1, |b| b.end);
        let mut lines: Vec<Line> = Vec::new();
        for b in self.pending.drain(..) {
            lines.extend(b.lines);
        }
        lines.append(&mut self.lines);
        if self.start.is_none() {
            self.end = last_end;
        }
        self.start = Some(start);
        self.records = (self.end - start + 1) as usize;
        self.bytes = lines_bytes(&lines);
        self.lines = lines;
        self.opened_at = Some(opened_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::encode::{encode, Line};

    fn line(offset: i64) -> Option<Line> {
        encode(Some(br#"{"trade_ts":1700000000000}"#), 0, offset, None).ok()
    }

    fn policy(records: usize, bytes: usize, age: Duration) -> Policy {
        Policy {
            records,
            bytes,
            age,
        }
    }

    fn claim(start: i64, end: i64) -> Claim {
        Claim {
            topic: "t".into(),
            partition: 0,
            start,
            end,
            objects: vec![],
            records: (end - start + 1) as usize,
            batches: vec![],
        }
    }

    #[test]
    fn queued_batches_are_written_as_one_run() {
        let mut p = PartitionState::new(0, Some(0), None);
        for o in 0..10 {
            p.push(o, line(o));
            if o % 2 == 1 {
                let b = p.take().unwrap();
                p.pending.push_back(b);
            }
        }
        let run = p.next_write(3, 1 << 20).unwrap();
        assert_eq!((run.start, run.end, run.lines.len()), (0, 5, 6));
        assert_eq!(run.cuts, vec![(0, 1), (2, 3), (4, 5)]);
        // A failed run goes back whole and is retried alone, with the same cuts.
        let mut failed = run;
        failed.attempted = true;
        p.pending.push_front(failed);
        let again = p.next_write(3, 1 << 20).unwrap();
        assert_eq!(again.cuts, vec![(0, 1), (2, 3), (4, 5)]);
        // A byte cap keeps runs small.
        let one = p.next_write(3, 1).unwrap();
        assert_eq!(one.cuts, vec![(6, 7)]);
    }

    #[test]
    fn an_adopted_run_is_cut_as_claimed() {
        let mut c = claim(0, 5);
        c.batches = vec![[0, 1], [2, 5]];
        let mut p = PartitionState::new(0, Some(0), Some(c));
        for o in 0..7 {
            p.push(o, line(o));
        }
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end), (0, 5));
        assert_eq!(b.cuts, vec![(0, 1), (2, 5)]);
        p.pending.push_back(b);
        let rest = p.take().unwrap();
        p.pending.push_back(rest);
        // The adopted run is written alone.
        assert_eq!(
            p.next_write(10, 1 << 20).unwrap().cuts,
            vec![(0, 1), (2, 5)]
        );
        assert_eq!(p.next_write(10, 1 << 20).unwrap().cuts, vec![(6, 6)]);
    }

    #[test]
    fn closes_on_count_and_ignores_redelivery() {
        let mut p = PartitionState::new(0, Some(10), None);
        assert!(!p.push(9, line(9)));
        for o in 10..13 {
            assert!(p.push(o, line(o)));
        }
        let now = Instant::now();
        assert_eq!(
            p.should_close(&policy(3, 1 << 20, Duration::from_secs(10)), false, now),
            Some(Close::Count)
        );
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end, b.lines.len()), (10, 12, 3));
        assert!(p
            .should_close(&policy(3, 1 << 20, Duration::from_secs(10)), true, now)
            .is_none());
    }

    #[test]
    fn a_batch_starts_where_the_previous_ended_across_unseen_offsets() {
        // Resumed at 10, which is a transaction marker: the first record delivered is 11, and
        // the batch still starts at 10, as any other writer resuming there would start it.
        let mut p = PartitionState::new(0, Some(10), None);
        p.push(11, line(11));
        p.push(12, line(12));
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end, b.cuts.clone()), (10, 12, vec![(10, 12)]));
        // 13 is a marker too: the next batch starts at 13.
        p.push(14, line(14));
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end), (13, 14));
    }

    #[test]
    fn an_adopted_claim_whose_first_offsets_are_gone_still_closes() {
        // Retention or DeleteRecords removed 5..=7 after the claim was made.
        let mut p = PartitionState::new(0, Some(5), Some(claim(5, 9)));
        for o in 8..11 {
            p.push(o, line(o));
        }
        let far = Instant::now() + Duration::from_secs(100);
        assert_eq!(
            p.should_close(&policy(100, 1 << 20, Duration::from_secs(10)), false, far),
            Some(Close::Claim)
        );
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end, b.lines.len()), (5, 9, 2));
    }

    #[test]
    fn a_partition_honouring_a_claim_never_counts_as_over_its_limit() {
        let mut p = PartitionState::new(0, Some(0), Some(claim(0, 999)));
        for o in 0..500 {
            p.push(o, line(o));
        }
        assert!(!p.over(150), "it must read to the claim's end");
        p.push(999, line(999));
        let b = p.take().unwrap();
        assert_eq!(b.end, 999);
        for o in 1000..1200 {
            p.push(o, line(o));
        }
        assert!(p.over(150));
    }

    #[test]
    fn closes_on_age_even_with_few_records() {
        let mut p = PartitionState::new(0, None, None);
        p.push(0, line(0));
        let later = Instant::now() + Duration::from_secs(11);
        assert_eq!(
            p.should_close(&policy(100, 1 << 20, Duration::from_secs(10)), false, later),
            Some(Close::Age)
        );
    }

    #[test]
    fn an_adopted_claim_fixes_the_extent() {
        let mut p = PartitionState::new(0, Some(5), Some(claim(5, 9)));
        for o in 5..9 {
            p.push(o, line(o));
        }
        let far = Instant::now() + Duration::from_secs(100);
        assert_eq!(
            p.should_close(&policy(2, 1, Duration::ZERO), true, far),
            None,
            "claim not complete yet"
        );
        p.push(9, line(9));
        p.push(10, line(10));
        assert_eq!(
            p.should_close(
                &policy(100, 1 << 20, Duration::from_secs(10)),
                false,
                Instant::now()
            ),
            Some(Close::Claim)
        );
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end, b.lines.len()), (5, 9, 5));
        assert!(b.adopted.is_some());
        let rest = p.take().unwrap();
        assert_eq!((rest.start, rest.end, rest.lines.len()), (10, 10, 1));
    }

    #[test]
    fn unread_also_reopens_batches_closed_behind_it() {
        let mut p = PartitionState::new(0, Some(0), None);
        for o in 0..3 {
            p.push(o, line(o));
        }
        let first = p.take().unwrap();
        for o in 3..5 {
            p.push(o, line(o));
        }
        let second = p.take().unwrap();
        p.pending.push_back(second);
        p.push(5, line(5));
        p.unread(first, claim(0, 3));
        assert!(p.pending.is_empty());
        let now = Instant::now();
        assert_eq!(
            p.should_close(&policy(100, 1 << 20, Duration::from_secs(10)), false, now),
            Some(Close::Claim)
        );
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end, b.lines.len()), (0, 3, 4));
        let rest = p.take().unwrap();
        assert_eq!((rest.start, rest.end, rest.lines.len()), (4, 5, 2));
    }

    #[test]
    fn unread_merges_back_for_a_longer_claim() {
        let mut p = PartitionState::new(0, Some(0), None);
        for o in 0..3 {
            p.push(o, line(o));
        }
        let b = p.take().unwrap();
        p.push(3, line(3));
        p.unread(b, claim(0, 5));
        p.push(4, line(4));
        assert_eq!(
            p.should_close(&policy(1, 1, Duration::ZERO), true, Instant::now()),
            None
        );
        p.push(5, line(5));
        let b = p.take().unwrap();
        assert_eq!((b.start, b.end, b.lines.len()), (0, 5, 6));
    }
}
