//! Turning Kafka records into JSONL lines: validate, add the lineage keys, find the trade's
//! UTC day (the partition of the object it belongs to).

use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Write;

/// Why a record cannot be written to the raw zone (it goes to the dead-letter topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    NotJson,
    NotObject,
    Empty,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::NotJson => "not_json",
            Reject::NotObject => "not_object",
            Reject::Empty => "empty_value",
        }
    }
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    trade_ts: Option<&'a RawValue>,
}

/// One record ready for an object: its line (without newline) and the day it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub offset: i64,
    pub day: Day,
    pub text: Vec<u8>,
}

/// A UTC calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Day {
    pub fn from_millis(ms: i64) -> Day {
        let dt = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        use chrono::Datelike;
        Day {
            year: dt.year(),
            month: dt.month(),
            day: dt.day(),
        }
    }

    /// `year=YYYY/month=MM/day=DD`, the Hive-style partition path.
    pub fn path(&self) -> String {
        format!(
            "year={:04}/month={:02}/day={:02}",
            self.year, self.month, self.day
        )
    }
}

/// Decodes one Kafka value: the line with `kafka_partition` / `kafka_offset` appended, and the
/// day of its `trade_ts` (the Kafka timestamp when the record has no usable `trade_ts`, so the
/// transform can quarantine it with its reason).
pub fn encode(
    value: Option<&[u8]>,
    partition: i32,
    offset: i64,
    kafka_ts_ms: Option<i64>,
) -> Result<Line, Reject> {
    let value = value.ok_or(Reject::Empty)?;
    let text = std::str::from_utf8(value)
        .map_err(|_| Reject::NotJson)?
        .trim();
    if text.is_empty() {
        return Err(Reject::Empty);
    }
    if !text.starts_with('{') {
        return Err(if serde_json::from_str::<&RawValue>(text).is_ok() {
            Reject::NotObject
        } else {
            Reject::NotJson
        });
    }
    let probe: Probe<'_> = serde_json::from_str(text).map_err(|_| Reject::NotJson)?;
    let ts = probe
        .trade_ts
        .and_then(|raw| raw.get().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 2.0e14)
        .map(|v| v as i64)
        .or(kafka_ts_ms)
        .unwrap_or(0);
    let body = text[..text.len() - 1].trim_end();
    let mut line = Vec::with_capacity(text.len() + 48);
    line.extend_from_slice(body.as_bytes());
    if body != "{" {
        line.push(b',');
    }
    let mut digits = itoa::Buffer::new();
    line.extend_from_slice(b"\"kafka_partition\":");
    line.extend_from_slice(digits.format(partition).as_bytes());
    line.extend_from_slice(b",\"kafka_offset\":");
    line.extend_from_slice(digits.format(offset).as_bytes());
    line.push(b'}');
    Ok(Line {
        offset,
        day: Day::from_millis(ts),
        text: line,
    })
}

/// Joins lines into a JSONL body, gzip-compressed when asked.
pub fn jsonl(lines: &[&Line], gzip: bool) -> Vec<u8> {
    let size: usize = lines.iter().map(|l| l.text.len() + 1).sum();
    let mut body = Vec::with_capacity(size);
    for l in lines {
        body.extend_from_slice(&l.text);
        body.push(b'\n');
    }
    if !gzip {
        return body;
    }
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(size / 4), flate2::Compression::fast());
    enc.write_all(&body).ok();
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_is_appended_and_day_comes_from_trade_time() {
        let v = br#"{"symbol":"AAPL","price":129.575,"trade_ts":1672348887785}"#;
        let line = encode(Some(v), 2, 41, Some(0)).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&line.text).unwrap();
        assert_eq!(parsed["kafka_partition"], 2);
        assert_eq!(parsed["kafka_offset"], 41);
        assert_eq!(parsed["price"].as_f64(), Some(129.575));
        assert!(String::from_utf8_lossy(&line.text).contains("\"price\":129.575,"));
        assert_eq!(line.day.path(), "year=2022/month=12/day=29");
    }

    #[test]
    fn midnight_separates_days() {
        let before = Day::from_millis(1_672_531_199_999); // 2022-12-31T23:59:59.999Z
        let after = Day::from_millis(1_672_531_200_000); // 2023-01-01T00:00:00Z
        assert_eq!(before.path(), "year=2022/month=12/day=31");
        assert_eq!(after.path(), "year=2023/month=01/day=01");
    }

    #[test]
    fn bad_values_have_reasons() {
        assert_eq!(encode(Some(b"nope"), 0, 0, None), Err(Reject::NotJson));
        assert_eq!(encode(Some(b"[1]"), 0, 0, None), Err(Reject::NotObject));
        assert_eq!(encode(Some(b"{\"a\":"), 0, 0, None), Err(Reject::NotJson));
        assert_eq!(encode(None, 0, 0, None), Err(Reject::Empty));
        let line = encode(Some(b"{}"), 1, 2, Some(86_400_000)).unwrap();
        assert_eq!(
            line.text,
            br#"{"kafka_partition":1,"kafka_offset":2}"#.to_vec()
        );
        assert_eq!(line.day.path(), "year=1970/month=01/day=02");
    }

    #[test]
    fn gzip_round_trips() {
        let a = encode(Some(br#"{"trade_ts":1}"#), 0, 0, None).unwrap();
        let gz = jsonl(&[&a], true);
        let mut out = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, format!("{}\n", String::from_utf8_lossy(&a.text)));
    }
}
