//! A day's rows: each raw object read through the rules into compact rows, then the day
//! de-duplicated on the Kafka identity (first read wins), sorted by the rule set's sort key and
//! encoded as Parquet files and a quarantine.

use super::intern::{FxSet, Interner};
use super::parquet::{self, RowRef};
use super::rules::{self, Reason, Row};
use super::{Error, Result};
use crate::sink::encode::Day;
use std::collections::BTreeMap;
use std::io::Read;

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
pub struct Assembled {
    pub files: Vec<Vec<u8>>,
    pub quarantine: Option<Vec<u8>>,
    pub by_reason: BTreeMap<&'static str, u64>,
    pub lines: u64,
    pub rows: u64,
    pub quarantined: u64,
    pub duplicates: u64,
}

/// De-duplicates a day's parsed objects (given in key order: first read wins), sorts the rows and
/// encodes the Parquet files and the quarantine. The rows stay where they were parsed; the day
/// is a list of references to them.
pub fn assemble(
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
}
