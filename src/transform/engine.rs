//! The Rust transform engine: list raw days → pick the changed ones → per day: read every raw
//! object, clean, de-duplicate, sort, write Parquet (and the quarantine), drop stale files, and
//! record the day's manifest last.
//!
//! A day is always rebuilt whole from all of its raw objects, so its output is a function of its
//! input: a rerun writes the same files under the same names, and a crash before the manifest
//! only means the day is rebuilt next time.

use super::parquet;
use super::rules::{self, Reason, Row};
use super::{Error, Result};
use crate::config::{S3Config, TransformConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::encode::Day;
use crate::store::{Encryption, ObjectMeta, Store};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

/// A fast, non-cryptographic hasher for the (partition, offset) de-duplication set.
#[derive(Default)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i32(&mut self, n: i32) {
        self.write_u64(n as u32 as u64);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

type FxSet<T> = HashSet<T, std::hash::BuildHasherDefault<Fx>>;

/// Sorts rows by the rule set's sort key (symbol, trade_ts, kafka_partition, kafka_offset)
/// through integer keys: symbols are ranked once, so the sort compares numbers, not strings.
fn sort_rows(rows: &[Row]) -> Vec<&Row> {
    let mut symbols: Vec<&str> = rows.iter().map(|r| r.symbol.as_str()).collect();
    symbols.sort_unstable();
    symbols.dedup();
    let rank: HashMap<&str, u32> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i as u32))
        .collect();
    let mut keys: Vec<(u32, i64, i32, i64, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                rank[r.symbol.as_str()],
                r.trade_ts,
                r.kafka_partition,
                r.kafka_offset,
                i as u32,
            )
        })
        .collect();
    keys.sort_unstable();
    keys.into_iter().map(|k| &rows[k.4 as usize]).collect()
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
    let mut out = Parsed {
        rows: Vec::with_capacity(text.len() / 200),
        quarantined: Vec::new(),
        lines: 0,
    };
    for line in text.split(|&b| b == b'\n') {
        if rules::is_blank(line) {
            continue;
        }
        out.lines += 1;
        match rules::clean_within(line, bounds) {
            Ok(row) => out.rows.push(row),
            Err(r) => out
                .quarantined
                .push((r, String::from_utf8_lossy(line).into_owned())),
        }
    }
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

    let total: usize = parsed.iter().map(|p| p.rows.len()).sum();
    let mut rows = Vec::with_capacity(total);
    let mut seen: FxSet<(i32, i64)> = FxSet::with_capacity_and_hasher(total, Default::default());
    let mut quarantined: Vec<(Reason, String, String)> = Vec::new();
    let (mut lines, mut duplicates) = (0u64, 0u64);
    for (p, obj) in parsed.into_iter().zip(&inputs) {
        lines += p.lines;
        for row in p.rows {
            if seen.insert((row.kafka_partition, row.kafka_offset)) {
                rows.push(row);
            } else {
                duplicates += 1;
            }
        }
        quarantined.extend(
            p.quarantined
                .into_iter()
                .map(|(r, l)| (r, l, obj.key.clone())),
        );
    }
    drop(seen);
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for (r, _, _) in &quarantined {
        *by_reason.entry(r.as_str()).or_default() += 1;
    }

    let props = props.clone();
    let rows_per_file = cfg.rows_per_file as usize;
    let files: Vec<Vec<u8>> = tokio::task::spawn_blocking(move || {
        let order = sort_rows(&rows);
        order
            .chunks(rows_per_file)
            .map(|chunk| parquet::write(chunk, &props))
            .collect::<std::result::Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| Error::Other(format!("parquet task failed: {e}")))?
    .map_err(|e| Error::Other(format!("writing parquet: {e}")))?;

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
    if !quarantined.is_empty() {
        let mut body = Vec::new();
        for (reason, raw, object) in &quarantined {
            serde_json::to_writer(
                &mut body,
                &serde_json::json!({"reason": reason.as_str(), "raw": raw, "object": object}),
            )
            .expect("serializable");
            body.push(b'\n');
        }
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

    let rows_written: u64 = total as u64 - duplicates;
    metrics.add("lines", lines);
    metrics.add("rows", rows_written);
    metrics.add("quarantined", quarantined.len() as u64);
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
        quarantined: quarantined.len() as u64,
        duplicates,
    };
    Ok((manifest, by_reason))
}

#[cfg(test)]
mod tests {
    use super::*;

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
