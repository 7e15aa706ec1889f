//! Counters every stage exposes: cheap atomics written on the hot path, read as a snapshot by
//! the status line, the Python API, the final summary and the Prometheus exporter.

pub mod prometheus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A named set of monotonically increasing counters plus one latency histogram.
#[derive(Default)]
pub struct Metrics {
    counters: BTreeMap<&'static str, AtomicU64>,
    /// Gauges whose names are only known at run time (e.g. `lag_p2` per Kafka partition).
    labelled: std::sync::Mutex<BTreeMap<String, u64>>,
    latency: LatencyHistogram,
}

impl Metrics {
    /// Creates a metrics set with the given counter names, all at zero.
    pub fn new(names: &[&'static str]) -> Arc<Self> {
        Arc::new(Self {
            counters: names.iter().map(|n| (*n, AtomicU64::new(0))).collect(),
            labelled: Default::default(),
            latency: LatencyHistogram::default(),
        })
    }

    /// Adds `n` to counter `name`. Unknown names are a programming error caught in debug builds.
    pub fn add(&self, name: &'static str, n: u64) {
        match self.counters.get(name) {
            Some(c) => {
                c.fetch_add(n, Ordering::Relaxed);
            }
            None => debug_assert!(false, "unknown counter {name}"),
        }
    }

    pub fn incr(&self, name: &'static str) {
        self.add(name, 1);
    }

    /// Sets a gauge-like counter (for values such as lag that go down as well as up).
    pub fn set(&self, name: &'static str, v: u64) {
        if let Some(c) = self.counters.get(name) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// Raises gauge `name` to `v` if it is below (a latest time set from several threads or in
    /// any order).
    pub fn raise(&self, name: &'static str, v: u64) {
        if let Some(c) = self.counters.get(name) {
            c.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Replaces every labelled gauge that starts with `prefix` by `values`.
    pub fn set_labelled(&self, prefix: &str, values: impl IntoIterator<Item = (String, u64)>) {
        drop(self.replace_labelled(prefix, values));
    }

    /// Replaces the labelled gauges under `prefix`; the lock stays held until the guard drops.
    fn replace_labelled(
        &self,
        prefix: &str,
        values: impl IntoIterator<Item = (String, u64)>,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        let mut g = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|k, _| !k.starts_with(prefix));
        g.extend(values);
        g
    }

    /// Sets gauge `name` and replaces the labelled gauges under `prefix` as one change: a
    /// [`snapshot`](Self::snapshot) sees both before or both after, so a total and its parts
    /// (the sink's lag and its lag per partition) always agree.
    pub fn set_with_parts(
        &self,
        name: &'static str,
        v: u64,
        prefix: &str,
        parts: impl IntoIterator<Item = (String, u64)>,
    ) {
        let _held = self.replace_labelled(prefix, parts);
        self.set(name, v);
    }

    /// Whether `name` is one of this set's counters.
    pub fn has(&self, name: &str) -> bool {
        self.counters.contains_key(name)
    }

    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .get(name)
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub fn record_latency_us(&self, us: u64) {
        self.latency.record(us);
    }

    /// A point-in-time copy: every counter, plus latency percentiles in milliseconds.
    pub fn snapshot(&self) -> Snapshot {
        // Counters are read under the labelled gauges' lock: a gauge set with its parts
        // (`set_with_parts`) is seen together with them.
        let labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        let mut values: BTreeMap<String, f64> = self
            .counters
            .iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed) as f64))
            .collect();
        values.extend(labelled.iter().map(|(k, v)| (k.clone(), *v as f64)));
        drop(labelled);
        // One read of the buckets: the three quantiles describe the same values.
        let counts = self.latency.counts();
        if counts.iter().any(|n| *n > 0) {
            for (key, q) in [
                ("latency_p50_ms", 0.50),
                ("latency_p99_ms", 0.99),
                ("latency_max_ms", 1.0),
            ] {
                let ms = LatencyHistogram::quantile_of(&counts, q) as f64 / 1e3;
                values.insert(key.into(), ms);
            }
        }
        Snapshot { values }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub values: BTreeMap<String, f64>,
}

/// Log-linear histogram of microsecond latencies: 16 sub-buckets per power of two, so any
/// quantile is within about 6% of the true value, with no allocation on the hot path.
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
}

const SUB: usize = 16;
const POWERS: usize = 40;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..SUB * POWERS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let power = 63 - v.leading_zeros() as usize; // >= 4
        let shift = power - 4;
        let sub = ((v >> shift) as usize) & (SUB - 1);
        ((power - 3) * SUB + sub).min(SUB * POWERS - 1)
    }

    fn lower_bound(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let power = i / SUB + 3;
        let sub = (i % SUB) as u64;
        (1u64 << power) + (sub << (power - 4))
    }

    pub fn record(&self, v: u64) {
        self.buckets[Self::index(v)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// The sum of every recorded value.
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// The smallest bucket boundary at or above `v`: counts below it are exact.
    pub fn boundary_at_least(v: u64) -> u64 {
        let i = Self::index(v);
        if Self::lower_bound(i) == v {
            v
        } else {
            Self::lower_bound(i + 1)
        }
    }

    /// How many recorded values are below `bound`; exact when `bound` is a bucket boundary
    /// (see [`Self::boundary_at_least`]), else it counts the bucket that straddles it too.
    pub fn count_below(&self, bound: u64) -> u64 {
        self.buckets
            .iter()
            .enumerate()
            .take_while(|(i, _)| Self::lower_bound(*i) < bound)
            .map(|(_, b)| b.load(Ordering::Relaxed))
            .sum()
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The smallest recorded bucket bound at or above quantile `q`.
    pub fn quantile(&self, q: f64) -> u64 {
        Self::quantile_of(&self.counts(), q)
    }

    /// Every bucket's count: subtract an earlier copy to get the values recorded since.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Quantile `q` of bucket counts taken with [`Self::counts`] (or a difference of two);
    /// 0 when they hold no value.
    pub fn quantile_of(counts: &[u64], q: f64) -> u64 {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::lower_bound(i);
            }
        }
        Self::lower_bound(counts.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_gauge_keeps_the_largest_value() {
        let m = Metrics::new(&["last"]);
        m.raise("last", 30);
        m.raise("last", 10);
        assert_eq!(m.get("last"), 30);
        m.raise("last", 40);
        assert_eq!(m.get("last"), 40);
    }

    #[test]
    fn a_total_set_with_its_parts_is_read_with_them() {
        let m = Metrics::new(&["lag"]);
        let writer = {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..200_000u64 {
                    let parts = [("lag_p0".to_string(), i), ("lag_p1".to_string(), 2 * i)];
                    m.set_with_parts("lag", 3 * i, "lag_p", parts);
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let v = m.snapshot().values;
            let parts: f64 = ["lag_p0", "lag_p1"].iter().filter_map(|k| v.get(*k)).sum();
            assert_eq!(
                v["lag"], parts,
                "a snapshot saw the total without its parts"
            );
            reads += 1;
        }
        writer.join().unwrap();
    }

    #[test]
    fn a_difference_of_counts_has_only_the_values_since() {
        let h = LatencyHistogram::default();
        for _ in 0..1000 {
            h.record(800_000); // a slow start: 0.8 s
        }
        let before = h.counts();
        for v in 1..=100u64 {
            h.record(v * 100);
        }
        let since: Vec<u64> = h.counts().iter().zip(&before).map(|(a, b)| a - b).collect();
        let p99 = LatencyHistogram::quantile_of(&since, 0.99) as f64;
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "p99 {p99}");
        assert!(h.quantile(0.99) >= 700_000);
        assert_eq!(
            LatencyHistogram::quantile_of(&vec![0; before.len()], 0.99),
            0
        );
    }

    #[test]
    fn quantiles_are_close() {
        let h = LatencyHistogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.07, "p50 {p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "p99 {p99}");
    }

    #[test]
    fn counts_below_a_boundary_are_exact() {
        let h = LatencyHistogram::default();
        for v in [3, 999, 1000, 1023, 1024, 1025, 5000, 40_000] {
            h.record(v);
        }
        assert_eq!(LatencyHistogram::boundary_at_least(1000), 1024);
        assert_eq!(LatencyHistogram::boundary_at_least(1024), 1024);
        assert_eq!(LatencyHistogram::boundary_at_least(5), 5);
        assert_eq!(h.count_below(1024), 4);
        assert_eq!(h.count_below(LatencyHistogram::boundary_at_least(5000)), 7);
        assert_eq!(h.count_below(u64::MAX), 8);
        assert_eq!(h.sum(), 3 + 999 + 1000 + 1023 + 1024 + 1025 + 5000 + 40_000);
    }

    #[test]
    fn counters_add_and_snapshot() {
        let m = Metrics::new(&["a", "b"]);
        m.add("a", 3);
        m.incr("b");
        m.set_labelled(
            "lag_p",
            [("lag_p0".to_string(), 5), ("lag_p1".to_string(), 7)],
        );
        m.set_labelled("lag_p", [("lag_p1".to_string(), 2)]);
        let s = m.snapshot();
        assert_eq!(s.values["a"], 3.0);
        assert_eq!(s.values.get("lag_p0"), None, "replaced, not accumulated");
        assert_eq!(s.values["lag_p1"], 2.0);
        assert_eq!(s.values["b"], 1.0);
    }
}
