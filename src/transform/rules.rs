//! The compiled copy of the shared cleaning rules (`python/stockpipe/rules.py` is the
//! definition). [`spec`] must equal the Python `SPEC`; the engine refuses to run otherwise, and
//! the equivalence tests run both implementations over the same dirty input.

use super::fields::{
    conditions, int_token, is_null, ms_token, price, string_token, symbol, volume,
};
use super::intern::Interner;
use super::line::parse;
pub use super::line::MAX_DEPTH;

use crate::sink::encode::Day;

pub const VERSION: i64 = 1;
pub const PRICE_PRECISION: u32 = 18;
pub const PRICE_SCALE: u32 = 8;
pub const TIME_MIN_MS: i64 = 631_152_000_000;
pub const TIME_MAX_MS: i64 = 4_102_444_800_000;
pub const SYMBOL_MAX_LEN: usize = 64;
pub const SYMBOL_STRIP: &str = " \t\r\n";
pub const CONDITIONS_SEPARATOR: &str = ",";
pub const SCHEMA_VERSIONS: &[i64] = &[1];

/// Processed columns: name and type, in file order.
pub const COLUMNS: &[(&str, &str)] = &[
    ("symbol", "string"),
    ("price", "decimal(18,8)"),
    ("volume", "double"),
    ("trade_ts", "timestamp_ms_utc"),
    ("conditions", "string"),
    ("received_ts", "timestamp_ms_utc"),
    ("source", "string"),
    ("kafka_partition", "int32"),
    ("kafka_offset", "int64"),
];
pub const PARTITION_COLUMNS: &[&str] = &["year", "month", "day"];
pub const SORT_KEY: &[&str] = &["symbol", "trade_ts", "kafka_partition", "kafka_offset"];
pub const DEDUPE_KEY: &[&str] = &["kafka_partition", "kafka_offset"];

/// Why a line is quarantined, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NotJson,
    NotObject,
    BadSchemaVersion,
    MissingLineage,
    MissingSymbol,
    BadSymbol,
    MissingPrice,
    BadPrice,
    NonPositivePrice,
    MissingTime,
    BadTime,
    BadVolume,
    BadConditions,
    BadReceivedTs,
    BadSource,
    WrongPartition,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::NotJson,
        Reason::NotObject,
        Reason::BadSchemaVersion,
        Reason::MissingLineage,
        Reason::MissingSymbol,
        Reason::BadSymbol,
        Reason::MissingPrice,
        Reason::BadPrice,
        Reason::NonPositivePrice,
        Reason::MissingTime,
        Reason::BadTime,
        Reason::BadVolume,
        Reason::BadConditions,
        Reason::BadReceivedTs,
        Reason::BadSource,
        Reason::WrongPartition,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotJson => "not_json",
            Reason::NotObject => "not_object",
            Reason::BadSchemaVersion => "bad_schema_version",
            Reason::MissingLineage => "missing_lineage",
            Reason::MissingSymbol => "missing_symbol",
            Reason::BadSymbol => "bad_symbol",
            Reason::MissingPrice => "missing_price",
            Reason::BadPrice => "bad_price",
            Reason::NonPositivePrice => "non_positive_price",
            Reason::MissingTime => "missing_time",
            Reason::BadTime => "bad_time",
            Reason::BadVolume => "bad_volume",
            Reason::BadConditions => "bad_conditions",
            Reason::BadReceivedTs => "bad_received_ts",
            Reason::BadSource => "bad_source",
            Reason::WrongPartition => "wrong_partition",
        }
    }
}

/// The rule set as a JSON value, shaped like the Python `SPEC`.
pub fn spec() -> serde_json::Value {
    serde_json::json!({
        "version": VERSION,
        "columns": COLUMNS.iter().map(|(n, t)| [n, t]).collect::<Vec<_>>(),
        "partition_columns": PARTITION_COLUMNS,
        "sort_key": SORT_KEY,
        "dedupe_key": DEDUPE_KEY,
        "reasons": Reason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "price_precision": PRICE_PRECISION,
        "price_scale": PRICE_SCALE,
        "time_min_ms": TIME_MIN_MS,
        "time_max_ms": TIME_MAX_MS,
        "symbol_max_len": SYMBOL_MAX_LEN,
        "symbol_strip": SYMBOL_STRIP,
        "conditions_separator": CONDITIONS_SEPARATOR,
        "schema_versions": SCHEMA_VERSIONS,
        "max_depth": MAX_DEPTH,
    })
}

/// A clean row, compact: `price` is the DECIMAL(18,8) unscaled value, the string columns are
/// ids of the [`Interner`] the row was read with, and absent values are kept as values no clean
/// row has (read them through the accessors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub price: i64,
    pub trade_ts: i64,
    pub kafka_offset: i64,
    received_ts: i64,
    volume: f64,
    pub symbol: u32,
    conditions: u32,
    source: u32,
    pub kafka_partition: i32,
}

impl Row {
    const NO_ID: u32 = u32::MAX;
    /// Clean times lie in [`TIME_MIN_MS`, `TIME_MAX_MS`).
    const NO_TIME: i64 = i64::MIN;

    pub fn volume(&self) -> Option<f64> {
        // Clean volumes are finite and ≥ 0: NaN means absent.
        (!self.volume.is_nan()).then_some(self.volume)
    }
    pub fn received_ts(&self) -> Option<i64> {
        (self.received_ts != Self::NO_TIME).then_some(self.received_ts)
    }
    pub fn conditions(&self) -> Option<u32> {
        (self.conditions != Self::NO_ID).then_some(self.conditions)
    }
    pub fn source(&self) -> Option<u32> {
        (self.source != Self::NO_ID).then_some(self.source)
    }
}

/// True for lines the rules skip rather than quarantine (only spaces, tabs, CR, LF).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// [start, end) of a UTC day in milliseconds.
pub fn day_bounds(day: Day) -> (i64, i64) {
    let start = chrono::NaiveDate::from_ymd_opt(day.year, day.month, day.day)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(i64::MIN, |t| t.and_utc().timestamp_millis());
    (start, start.saturating_add(86_400_000))
}

/// Applies the rules to one raw line read from the raw partition `day` (when known); the row's
/// strings are in the interner returned with it.
pub fn clean(line: &[u8], day: Option<Day>) -> Result<(Row, Interner), Reason> {
    let mut strings = Interner::default();
    let row = clean_within(line, day.map(day_bounds), &mut strings)?;
    Ok((row, strings))
}

/// [`clean`] with the partition day given as its [start, end) milliseconds (computed once per
/// object), sharing the strings of the rows read through `strings`.
pub fn clean_within(
    line: &[u8],
    day: Option<(i64, i64)>,
    strings: &mut Interner,
) -> Result<Row, Reason> {
    let f = parse(line)?;
    if let Some(v) = f.schema_version.filter(|v| v.get() != "null") {
        if !int_token(v).is_some_and(|n| SCHEMA_VERSIONS.contains(&n)) {
            return Err(Reason::BadSchemaVersion);
        }
    }
    let partition = f
        .kafka_partition
        .and_then(int_token)
        .filter(|p| (0..=i32::MAX as i64).contains(p));
    let offset = f.kafka_offset.and_then(int_token).filter(|o| *o >= 0);
    let (Some(partition), Some(offset)) = (partition, offset) else {
        return Err(Reason::MissingLineage);
    };
    let symbol = symbol(f.symbol, strings)?;
    if is_null(f.price) {
        return Err(Reason::MissingPrice);
    }
    let price = price(f.price.expect("not null").get())?;
    if is_null(f.trade_ts) {
        return Err(Reason::MissingTime);
    }
    let trade_ts = ms_token(f.trade_ts.expect("not null")).ok_or(Reason::BadTime)?;
    let volume = volume(f.volume)?;
    let conditions = conditions(f.conditions, strings)?;
    let received_ts = match f.received_ts.filter(|v| v.get() != "null") {
        None => None,
        Some(v) => Some(ms_token(v).ok_or(Reason::BadReceivedTs)?),
    };
    let source = match f.source.filter(|v| v.get() != "null") {
        None => None,
        Some(v) => Some(strings.id(&string_token(v).ok_or(Reason::BadSource)?)),
    };
    if let Some((start, end)) = day {
        if !(start..end).contains(&trade_ts) {
            return Err(Reason::WrongPartition);
        }
    }
    Ok(Row {
        price,
        trade_ts,
        kafka_offset: offset,
        received_ts: received_ts.unwrap_or(Row::NO_TIME),
        volume: volume.unwrap_or(f64::NAN),
        symbol,
        conditions: conditions.unwrap_or(Row::NO_ID),
        source: source.unwrap_or(Row::NO_ID),
        kafka_partition: partition as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &str) -> Reason {
        clean(line.as_bytes(), None).map(|_| ()).unwrap_err()
    }

    const GOOD: &str = r#"{"symbol":" aapl ","price":129.575,"volume":1,"trade_ts":1672348887785,"conditions":["1","24"],"received_ts":1672348887790,"source":"finnhub","schema_version":1,"kafka_partition":2,"kafka_offset":7}"#;

    #[test]
    fn a_good_line_becomes_a_row() {
        let (r, s) = clean(GOOD.as_bytes(), Some(Day::from_millis(1672348887785))).unwrap();
        assert_eq!(s.get(r.symbol), "AAPL");
        assert_eq!(r.price, 12_957_500_000);
        assert_eq!(r.volume(), Some(1.0));
        assert_eq!(r.conditions().map(|c| s.get(c)), Some("1,24"));
        assert_eq!(r.source().map(|c| s.get(c)), Some("finnhub"));
        assert_eq!(r.received_ts(), Some(1672348887790));
        assert_eq!((r.kafka_partition, r.kafka_offset), (2, 7));
        assert_eq!(std::mem::size_of::<Row>(), 56);

        // Absent and null optional fields read back as absent.
        let bare = br#"{"symbol":"A","price":1,"trade_ts":1672348887785,"volume":null,"kafka_partition":0,"kafka_offset":1}"#;
        let (r, _) = clean(bare, None).unwrap();
        assert_eq!(
            (r.volume(), r.received_ts(), r.conditions(), r.source()),
            (None, None, None, None)
        );
        let zero = br#"{"symbol":"A","price":1,"trade_ts":1672348887785,"volume":0,"conditions":[],"kafka_partition":0,"kafka_offset":1}"#;
        let (r, s) = clean(zero, None).unwrap();
        assert_eq!(r.volume(), Some(0.0));
        assert_eq!(r.conditions().map(|c| s.get(c)), Some(""));
    }

    #[test]
    fn prices_round_half_up_to_eight_decimals() {
        assert_eq!(price("0.000000015"), Ok(2));
        assert_eq!(price("0.0000000149"), Ok(1));
        assert_eq!(price("1.5e-8"), Ok(2));
        assert_eq!(price("9999999999.99999999"), Ok(999_999_999_999_999_999));
        assert_eq!(price("9999999999.999999995"), Err(Reason::BadPrice));
        assert_eq!(price("1e10"), Err(Reason::BadPrice));
        assert_eq!(price("-1e12"), Err(Reason::BadPrice));
        assert_eq!(price("0.000000004"), Err(Reason::NonPositivePrice));
        assert_eq!(price("-0.0"), Err(Reason::NonPositivePrice));
        assert_eq!(price("-3"), Err(Reason::NonPositivePrice));
        assert_eq!(
            price("1e-99999999999999999999"),
            Err(Reason::NonPositivePrice)
        );
        assert_eq!(price("12E+2"), Ok(120_000_000_000));
        assert_eq!(price("\"1\""), Err(Reason::BadPrice));
    }

    #[test]
    fn each_reason_is_found() {
        assert_eq!(reason("{"), Reason::NotJson);
        assert_eq!(reason(r#"{"a":1,"a":2}"#), Reason::NotJson);
        assert_eq!(reason(r#"{"a":"\ud800"}"#), Reason::NotJson);
        assert_eq!(reason("[1]"), Reason::NotObject);
        assert_eq!(reason(r#"{"schema_version":2}"#), Reason::BadSchemaVersion);
        assert_eq!(
            reason(r#"{"kafka_partition":-1,"kafka_offset":1}"#),
            Reason::MissingLineage
        );
        let base = r#""kafka_partition":0,"kafka_offset":1"#;
        assert_eq!(
            reason(&format!(r#"{{{base},"symbol":"  "}}"#)),
            Reason::MissingSymbol
        );
        assert_eq!(
            reason(&format!(r#"{{{base},"symbol":"é"}}"#)),
            Reason::BadSymbol
        );
        assert_eq!(
            reason(&format!(r#"{{{base},"symbol":"A"}}"#)),
            Reason::MissingPrice
        );
        assert_eq!(
            reason(&format!(r#"{{{base},"symbol":"A","price":"1"}}"#)),
            Reason::BadPrice
        );
        assert_eq!(
            reason(&format!(r#"{{{base},"symbol":"A","price":0}}"#)),
            Reason::NonPositivePrice
        );
        assert_eq!(
            reason(&format!(r#"{{{base},"symbol":"A","price":1}}"#)),
            Reason::MissingTime
        );
        let p = r#""symbol":"A","price":1"#;
        assert_eq!(
            reason(&format!(r#"{{{base},{p},"trade_ts":1.0e12}}"#)),
            Reason::BadTime
        );
        let t = r#""trade_ts":1672348887785"#;
        assert_eq!(
            reason(&format!(r#"{{{base},{p},{t},"volume":-1}}"#)),
            Reason::BadVolume
        );
        assert_eq!(
            reason(&format!(r#"{{{base},{p},{t},"volume":1e999}}"#)),
            Reason::BadVolume
        );
        assert_eq!(
            reason(&format!(r#"{{{base},{p},{t},"conditions":["a,b"]}}"#)),
            Reason::BadConditions
        );
        assert_eq!(
            reason(&format!(r#"{{{base},{p},{t},"received_ts":"x"}}"#)),
            Reason::BadReceivedTs
        );
        assert_eq!(
            reason(&format!(r#"{{{base},{p},{t},"source":1}}"#)),
            Reason::BadSource
        );
        let line = format!(r#"{{{base},{p},{t}}}"#);
        let other_day = Day::from_millis(1672348887785 + 86_400_000);
        assert_eq!(
            clean(line.as_bytes(), Some(other_day)).unwrap_err(),
            Reason::WrongPartition
        );
    }

    #[test]
    fn blank_lines_are_only_ascii_space() {
        assert!(is_blank(b" \t\r\n"));
        assert!(!is_blank(b"\x0b"));
    }
}
