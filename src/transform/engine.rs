//! The Rust transform engine: list raw days → pick the changed ones → per day: read every raw
//! object, clean, de-duplicate, sort, write Parquet (and the quarantine), drop stale files, and
//! record the day's manifest last.
//!
//! A day is always rebuilt whole from all of its raw objects, so its output is a function of its
//! input: a rerun writes the same files under the same names, and a crash before the manifest
//! only means the day is rebuilt next time.

use super::assemble::{assemble, parse_object, Assembled, Parsed};
use super::parquet;
use super::rules;
use super::{Error, Result};
use crate::config::{S3Config, TransformConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::encode::Day;
use crate::store::{Encryption, ObjectMeta, Store};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
