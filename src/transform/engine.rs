//! The Rust transform engine: list raw days → pick the changed ones → per day: read every raw
//! object, clean, de-duplicate, sort, write Parquet (and the quarantine), drop stale files, and
//! record the day's manifest last.
//!
//! A day is always rebuilt whole from all of its raw objects, so its output is a function of its
//! input: a rerun writes the same files under the same names, and a crash before the manifest
//! only means the day is rebuilt next time.

use super::intern::{FxSet, Interner};
use super::parquet::{self, RowRef};
use super::rules::{self, Reason, Row};
use super::{Error, Result};
use crate::config::{S3Config, TransformConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::encode::Day;
use crate::store::{Encryption, ObjectMeta, Store};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;

/// Sorts a day's rows by the rule set's sort key (symbol, trade_ts, kafka_partition,
/// kafka_offset) through integer keys: the symbols of every object are ranked once, so the sort
/// compares numbers, not strings.
fn sort_rows<'a>(parsed: &'a [Parsed], kept: &[(u32, u32)]) -> Vec<RowRef<'a>> {
    let mut names: Vec<&str> = parsed
        .iter()
        .flat_map(|p| p.strings.iter().map(|s| &**s))
        .collect();
    names.sort_unstable();
    names.dedup();
    // Per object: string id → rank of that string among all of the day's strings.
    let ranks: Vec<Vec<u32>> = parsed
        .iter()
        .map(|p| {
            p.strings
                .iter()
                .map(|s| names.binary_search(&&**s).expect("listed") as u32)
                .collect()
        })
        .collect();
    let mut keys: Vec<(u32, i64, i32, i64, u32)> = kept
        .iter()
        .enumerate()
        .map(|(i, &(o, r))| {
            let row = &parsed[o as usize].rows[r as usize];
            (
                ranks[o as usize][row.symbol as usize],
                row.trade_ts,
                row.kafka_partition,
                row.kafka_offset,
                i as u32,
            )
        })
        .collect();
    keys.sort_unstable();
    keys.into_iter()
        .map(|k| {
            let (o, r) = kept[k.4 as usize];
            let p = &parsed[o as usize];
            RowRef {
                row: &p.rows[r as usize],
                strings: &p.strings,
            }
        })
        .collect()
}

/// Which raw days to look at.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this day.
    pub date: Option<Day>,
    /// Only this day and later ones.
    pub since: Option<Day>,
    /// Rebuild the selected days even when their raw objects did not change.
    pub full: bool,
}

impl Selection {
    fn wants(&self, day: Day) -> bool {
        self.date.is_none_or(|d| d == day) && self.since.is_none_or(|s| day >= s)
    }
}

/// What a day was built from and into; kept at `<processed_prefix>/_manifest/YYYY-MM-DD.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub rules_version: i64,
    pub engine: String,
    pub day: String,
    pub inputs: Vec<Input>,
    pub outputs: Vec<String>,
    pub quarantine: Vec<String>,
    pub lines: u64,
    pub rows: u64,
    pub quarantined: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Input {
    pub key: String,
    pub size: u64,
}

pub const COUNTERS: &[&str] = &[
    "days",
    "days_skipped",
    "objects",
    "bytes_in",
    "lines",
    "rows",
    "quarantined",
    "duplicates",
    "files",
    "bytes_out",
];

/// Raw day of a key `<raw_prefix>/year=YYYY/month=MM/day=DD/<name>.jsonl[.gz]`.
pub fn raw_day(key: &str) -> Option<Day> {
    if !(key.ends_with(".jsonl") || key.ends_with(".jsonl.gz")) {
        return None;
    }
    let mut parts = HashMap::new();
    for seg in key.split('/') {
        if let Some((k, v)) = seg.split_once('=') {
            if rules::PARTITION_COLUMNS.contains(&k)
                && !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
            {
                parts.insert(k, v.parse::<u32>().ok()?);
            }
        }
    }
    let (y, m, d) = (parts.get("year")?, parts.get("month")?, parts.get("day")?);
    chrono::NaiveDate::from_ymd_opt(*y as i32, *m, *d)?;
    Some(Day {
        year: *y as i32,
        month: *m,
        day: *d,
    })
}

pub fn day_iso(day: Day) -> String {
    format!("{:04}-{:02}-{:02}", day.year, day.month, day.day)
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Option<Day> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    use chrono::Datelike;
    Some(Day {
        year: d.year(),
        month: d.month(),
        day: d.day(),
    })
}

fn manifest_key(cfg: &TransformConfig, day: Day) -> String {
    format!("{}/_manifest/{}.json", cfg.processed_prefix, day_iso(day))
}

/// The result of reading one raw object.
#[derive(Debug)]
pub struct Parsed {
    pub rows: Vec<Row>,
    /// The rows' string values, by id.
    pub strings: Vec<Box<str>>,
    pub quarantined: Vec<(Reason, String)>,
    /// Non-blank lines read (rows + quarantined).
    pub lines: u64,
}

fn decompress(key: &str, body: Vec<u8>) -> Result<Vec<u8>> {
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(body.len() * 6);
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Input(format!("raw object {key} is not valid gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(body)
    }
}

/// Reads one raw object (plain or gzip JSONL) of the raw partition `day` through the rules.
pub fn parse_object(key: &str, body: Vec<u8>, day: Day) -> Result<Parsed> {
    let text = decompress(key, body)?;
    let bounds = Some(rules::day_bounds(day));
    let mut strings = Interner::default();
    let mut out = Parsed {
        rows: Vec::with_capacity(text.len() / 200),
        strings: Vec::new(),
        quarantined: Vec::new(),
        lines: 0,
    };
    for line in text.split(|&b| b == b'\n') {
        if rules::is_blank(line) {
            continue;
        }
        out.lines += 1;
        match rules::clean_within(line, bounds, &mut strings) {
            Ok(row) => out.rows.push(row),
            Err(r) => out
                .quarantined
                .push((r, String::from_utf8_lossy(line).into_owned())),
        }
    }
    out.strings = strings.into_values();
    Ok(out)
}

/// Runs the transform over the selected days; counters go to `metrics`.
pub async fn run_transform(
    cfg: &TransformConfig,
    s3: &S3Config,
    selection: &Selection,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<()> {
    let props = parquet::properties(&cfg.compression).map_err(Error::Config)?;
    if cfg.rows_per_file == 0 {
        return Err(Error::Config(
            "[transform] rows_per_file must be at least 1".into(),
        ));
    }
    let encryption = Encryption::from_config(&cfg.sse, None);
    let input = Store::open(&cfg.input, s3, encryption.clone()).await?;
    let output = Store::open(&cfg.output, s3, encryption).await?;

    let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut days: BTreeMap<Day, Vec<ObjectMeta>> = BTreeMap::new();
    for obj in input.list(&format!("{}/", cfg.raw_prefix), None).await? {
        if let Some(day) = raw_day(&obj.key) {
            days.entry(day).or_default().push(obj);
        }
    }
    // Two days at a time: one day's sort and Parquet encoding overlap the next one's parsing.
    let (props, input, output, metrics) = (&props, &input, &output, &metrics);
    let mut results = stream::iter(days.into_iter().filter(|(day, _)| selection.wants(*day)))
        .map(|(day, objects)| {
            let shutdown = shutdown.clone();
            async move {
                if shutdown.is_triggered() {
                    log::info!("stopping before {}", day_iso(day));
                    return Ok(None);
                }
                let mut inputs: Vec<Input> = objects
                    .iter()
                    .map(|o| Input {
                        key: o.key.clone(),
                        size: o.size,
                    })
                    .collect();
                inputs.sort();
                let mkey = manifest_key(cfg, day);
                if !selection.full {
                    if let Some(old) = output.get(&mkey).await? {
                        if let Ok(old) = serde_json::from_slice::<Manifest>(&old) {
                            if old.inputs == inputs && old.rules_version == rules::VERSION {
                                metrics.incr("days_skipped");
                                return Ok(None);
                            }
                        }
                    }
                }
                let (manifest, reasons) =
                    build_day(cfg, props, input, output, day, inputs, metrics).await?;
                output
                    .put(
                        &mkey,
                        serde_json::to_vec_pretty(&manifest).expect("serializable"),
                        false,
                    )
                    .await?;
                metrics.incr("days");
                Ok::<_, Error>(Some(reasons))
            }
        })
        .buffer_unordered(2);
    while let Some(done) = results.next().await {
        if let Some(reasons) = done? {
            for (r, n) in reasons {
                *by_reason.entry(r).or_default() += n;
            }
            metrics.set_labelled(
                "quarantined_",
                by_reason
                    .iter()
                    .map(|(r, n)| (format!("quarantined_{r}"), *n)),
            );
        }
    }
    Ok(())
}

async fn build_day(
    cfg: &TransformConfig,
    props: &::parquet::file::properties::WriterProperties,
    input: &Store,
    output: &Store,
    day: Day,
    inputs: Vec<Input>,
    metrics: &Arc<Metrics>,
) -> Result<(Manifest, BTreeMap<&'static str, u64>)> {
    log::info!(
        "building {} from {} raw objects",
        day_iso(day),
        inputs.len()
    );
    // Objects in key order, lines in file order: "first read wins" is the same in every run.
    let parsed: Vec<Parsed> = stream::iter(inputs.iter().cloned())
        .map(|obj| async move {
            let body = input.get(&obj.key).await?.ok_or_else(|| {
                Error::Input(format!("raw object {} vanished while reading", obj.key))
            })?;
            metrics.add("objects", 1);
            metrics.add("bytes_in", body.len() as u64);
            let key = obj.key.clone();
            tokio::task::spawn_blocking(move || parse_object(&key, body, day))
                .await
                .map_err(|e| Error::Other(format!("parser task failed: {e}")))?
        })
        .buffered(8)
        .try_collect()
        .await?;

    let props = props.clone();
    let rows_per_file = cfg.rows_per_file as usize;
    let keys: Vec<String> = inputs.iter().map(|i| i.key.clone()).collect();
    let built = tokio::task::spawn_blocking(move || assemble(parsed, &keys, rows_per_file, &props))
        .await
        .map_err(|e| Error::Other(format!("parquet task failed: {e}")))??;
    let Assembled {
        files,
        quarantine,
        by_reason,
        lines,
        rows: rows_written,
        quarantined,
        duplicates,
    } = built;

    let day_dir = format!("{}/{}/", cfg.processed_prefix, day.path());
    let mut outputs = Vec::new();
    for (i, body) in files.into_iter().enumerate() {
        let key = format!("{day_dir}part-{i:05}.parquet");
        metrics.add("bytes_out", body.len() as u64);
        metrics.incr("files");
        output.put(&key, body, false).await?;
        outputs.push(key);
    }

    let q_dir = format!("{}/{}/", cfg.quarantine_prefix, day.path());
    let mut q_files = Vec::new();
    if let Some(body) = quarantine {
        let key = format!("{q_dir}part-00000.jsonl");
        output.put(&key, body, false).await?;
        q_files.push(key);
    }
    for (dir, keep) in [(&day_dir, &outputs), (&q_dir, &q_files)] {
        for stale in output.list(dir, None).await? {
            if !keep.contains(&stale.key) {
                output.delete(&stale.key).await?;
            }
        }
    }

    metrics.add("lines", lines);
    metrics.add("rows", rows_written);
    metrics.add("quarantined", quarantined);
    metrics.add("duplicates", duplicates);
    let manifest = Manifest {
        rules_version: rules::VERSION,
        engine: "rust".into(),
        day: day_iso(day),
        inputs,
        outputs,
        quarantine: q_files,
        lines,
        rows: rows_written,
        quarantined,
        duplicates,
    };
    Ok((manifest, by_reason))
}

/// The (partition, offset) pairs seen so far in a day. The sink writes each partition's offsets
/// in contiguous runs, so a bitmap per partition over its offset range is the common case (an
/// eighth of a byte per row, no hashing); offsets spread wider than that use a hash set.
enum Seen {
    Dense(Vec<Option<(i64, Vec<u64>)>>),
    Sparse(FxSet<(i32, i64)>),
}

impl Seen {
    fn for_rows<'a>(rows: impl Iterator<Item = &'a Row>, total: usize) -> Seen {
        let sparse = || Seen::Sparse(FxSet::with_capacity_and_hasher(total, Default::default()));
        let mut ranges: Vec<Option<(i64, i64)>> = Vec::new();
        for row in rows {
            let p = row.kafka_partition as usize;
            if p > u16::MAX as usize {
                return sparse();
            }
            if ranges.len() <= p {
                ranges.resize(p + 1, None);
            }
            let r = ranges[p].get_or_insert((row.kafka_offset, row.kafka_offset));
            r.0 = r.0.min(row.kafka_offset);
            r.1 = r.1.max(row.kafka_offset);
        }
        let bits: u128 = ranges
            .iter()
            .flatten()
            .map(|(lo, hi)| (hi - lo) as u128 + 1)
            .sum();
        if bits > 64 * total as u128 + 4096 {
            return sparse();
        }
        Seen::Dense(
            ranges
                .into_iter()
                .map(|r| r.map(|(lo, hi)| (lo, vec![0u64; ((hi - lo) as usize) / 64 + 1])))
                .collect(),
        )
    }

    /// True when the pair was not seen before (and records it).
    fn insert(&mut self, partition: i32, offset: i64) -> bool {
        match self {
            Seen::Sparse(set) => set.insert((partition, offset)),
            Seen::Dense(parts) => {
                let (lo, bits) = parts[partition as usize]
                    .as_mut()
                    .expect("every row's partition has a range");
                let i = (offset - *lo) as usize;
                let (word, bit) = (i / 64, 1u64 << (i % 64));
                let fresh = bits[word] & bit == 0;
                bits[word] |= bit;
                fresh
            }
        }
    }
}

/// A day's output, built off the runtime.
struct Assembled {
    files: Vec<Vec<u8>>,
    quarantine: Option<Vec<u8>>,
    by_reason: BTreeMap<&'static str, u64>,
    lines: u64,
    rows: u64,
    quarantined: u64,
    duplicates: u64,
}

/// De-duplicates a day's parsed objects (given in key order: first read wins), sorts the rows and
/// encodes the Parquet files and the quarantine. The rows stay where they were parsed; the day
/// is a list of references to them.
fn assemble(
    parsed: Vec<Parsed>,
    keys: &[String],
    rows_per_file: usize,
    props: &::parquet::file::properties::WriterProperties,
) -> Result<Assembled> {
    let total: usize = parsed.iter().map(|p| p.rows.len()).sum();
    // (object, row) of each row kept.
    let mut kept: Vec<(u32, u32)> = Vec::with_capacity(total);
    let mut seen = Seen::for_rows(parsed.iter().flat_map(|p| &p.rows), total);
    let (mut lines, mut duplicates) = (0u64, 0u64);
    for (o, p) in parsed.iter().enumerate() {
        lines += p.lines;
        for (r, row) in p.rows.iter().enumerate() {
            if seen.insert(row.kafka_partition, row.kafka_offset) {
                kept.push((o as u32, r as u32));
            } else {
                duplicates += 1;
            }
        }
    }
    drop(seen);

    let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut quarantined = 0u64;
    let mut body = Vec::new();
    for (p, key) in parsed.iter().zip(keys) {
        for (reason, raw) in &p.quarantined {
            *by_reason.entry(reason.as_str()).or_default() += 1;
            quarantined += 1;
            serde_json::to_writer(
                &mut body,
                &serde_json::json!({"reason": reason.as_str(), "raw": raw, "object": key}),
            )
            .expect("serializable");
            body.push(b'\n');
        }
    }

    let order = sort_rows(&parsed, &kept);
    drop(kept);
    let files = order
        .chunks(rows_per_file)
        .map(|chunk| parquet::write(chunk, props))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Other(format!("writing parquet: {e}")))?;
    Ok(Assembled {
        files,
        quarantine: (quarantined > 0).then_some(body),
        by_reason,
        lines,
        rows: order.len() as u64,
        quarantined,
        duplicates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_seen_sets_agree() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for spread in [10i64, 1_000, 1 << 40] {
            let rows: Vec<Row> = (0..5_000)
                .map(|_| {
                    let line = format!(
                        r#"{{"symbol":"A","price":1,"trade_ts":1672348887785,"kafka_partition":{},"kafka_offset":{}}}"#,
                        rng.random_range(0..3),
                        rng.random_range(0..spread)
                    );
                    rules::clean(line.as_bytes(), None).unwrap().0
                })
                .collect();
            let mut seen = Seen::for_rows(rows.iter(), rows.len());
            assert_eq!(matches!(seen, Seen::Dense(_)), spread < 1 << 40);
            let mut set = std::collections::HashSet::new();
            for r in &rows {
                assert_eq!(
                    seen.insert(r.kafka_partition, r.kafka_offset),
                    set.insert((r.kafka_partition, r.kafka_offset))
                );
            }
        }
    }

    #[test]
    fn raw_keys_name_their_day() {
        let d = raw_day("raw.data/year=2024/month=02/day=29/stock-data+0+1-2.jsonl.gz").unwrap();
        assert_eq!(day_iso(d), "2024-02-29");
        assert!(raw_day("raw.data/year=2023/month=02/day=29/x.jsonl").is_none());
        assert!(raw_day("raw.data/year=2024/month=02/day=29/_claims/x.json").is_none());
        assert!(raw_day("raw.data/x.jsonl").is_none());
        assert_eq!(parse_day("2024-02-29"), Some(d));
    }
}
