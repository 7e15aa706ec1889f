//! The compiled copy of the shared cleaning rules (`python/stockpipe/rules.py` is the
//! definition). [`spec`] must equal the Python `SPEC`; the engine refuses to run otherwise, and
//! the equivalence tests run both implementations over the same dirty input.

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use super::intern::Interner;

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

/// The fields the rules look at, each as its raw JSON text (`None` when absent).
#[derive(Default)]
struct Fields<'a> {
    schema_version: Option<&'a RawValue>,
    kafka_partition: Option<&'a RawValue>,
    kafka_offset: Option<&'a RawValue>,
    symbol: Option<&'a RawValue>,
    price: Option<&'a RawValue>,
    trade_ts: Option<&'a RawValue>,
    volume: Option<&'a RawValue>,
    conditions: Option<&'a RawValue>,
    received_ts: Option<&'a RawValue>,
    source: Option<&'a RawValue>,
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut f = Fields::default();
        // A key given twice makes the line not JSON the rules accept. Known keys are tracked in
        // a bitmask; other keys (rare) in a small list.
        let mut known = 0u16;
        let mut others: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let (bit, slot) = match key.as_ref() {
                "schema_version" => (0, Some(&mut f.schema_version)),
                "kafka_partition" => (1, Some(&mut f.kafka_partition)),
                "kafka_offset" => (2, Some(&mut f.kafka_offset)),
                "symbol" => (3, Some(&mut f.symbol)),
                "price" => (4, Some(&mut f.price)),
                "trade_ts" => (5, Some(&mut f.trade_ts)),
                "volume" => (6, Some(&mut f.volume)),
                "conditions" => (7, Some(&mut f.conditions)),
                "received_ts" => (8, Some(&mut f.received_ts)),
                "source" => (9, Some(&mut f.source)),
                _ => (15, None),
            };
            match slot {
                Some(slot) => {
                    if known & (1 << bit) != 0 {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    known |= 1 << bit;
                    *slot = Some(map.next_value::<&'de RawValue>()?);
                }
                None => {
                    if others.contains(&key) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    map.next_value::<IgnoredAny>()?;
                    others.push(key);
                }
            }
        }
        Ok(f)
    }
}

/// Containers may nest this deep (the top-level object is depth 1); deeper lines are not JSON
/// the rules accept, in either engine, whatever their parsers' own limits.
pub const MAX_DEPTH: usize = 64;

/// Checks what a JSON parser lets through but the rules refuse: nesting beyond [`MAX_DEPTH`]
/// and `\u` escapes of a UTF-16 surrogate that is not half of a pair. `text` is valid JSON.
fn check_structure(text: &str) -> Result<(), Reason> {
    let b = text.as_bytes();
    // Most lines have no escapes and too few brackets to nest deeply: nothing to check.
    // One pass, in chunks the compiler turns into vector compares.
    let (mut brackets, mut escapes) = (0usize, 0u8);
    for chunk in b.chunks(64) {
        let mut n = 0u8;
        for &c in chunk {
            n += u8::from(c == b'{' || c == b'[');
            escapes |= u8::from(c == b'\\');
        }
        brackets += n as usize;
    }
    if brackets <= MAX_DEPTH && escapes == 0 {
        return Ok(());
    }
    let hex = |i: usize| -> Option<u32> {
        let h = b.get(i..i + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    let (mut depth, mut i, mut in_string) = (0usize, 0usize, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'"' => in_string = false,
                b'\\' => {
                    if b.get(i + 1) == Some(&b'u') {
                        let u = hex(i + 2).ok_or(Reason::NotJson)?;
                        if (0xDC00..0xE000).contains(&u) {
                            return Err(Reason::NotJson);
                        }
                        if (0xD800..0xDC00).contains(&u) {
                            let low = (b.get(i + 6..i + 8) == Some(b"\\u"))
                                .then(|| hex(i + 8))
                                .flatten();
                            if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                                return Err(Reason::NotJson);
                            }
                            i += 6;
                        }
                        i += 6;
                        continue;
                    }
                    i += 1;
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Reason::NotJson);
                    }
                }
                b'}' | b']' => depth -= 1,
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

fn parse(line: &[u8]) -> Result<Fields<'_>, Reason> {
    let text = std::str::from_utf8(line).map_err(|_| Reason::NotJson)?;
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if first != Some(b'{') {
        // Validated without converting numbers, so 1e999 is JSON here as it is in Python.
        serde_json::from_str::<IgnoredAny>(text).map_err(|_| Reason::NotJson)?;
        check_structure(text)?;
        return Err(Reason::NotObject);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields =
        de::Deserializer::deserialize_map(&mut de, LineVisitor).map_err(|_| Reason::NotJson)?;
    de.end().map_err(|_| Reason::NotJson)?;
    check_structure(text)?;
    Ok(fields)
}

fn is_null(v: Option<&RawValue>) -> bool {
    v.is_none_or(|v| v.get() == "null")
}

/// An integer JSON token (no fraction, no exponent) as i64; `None` for anything else or beyond i64.
fn int_token(v: &RawValue) -> Option<i64> {
    let t = v.get();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i64>().ok()
}

fn is_number_token(t: &str) -> bool {
    matches!(t.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
}

/// `Some(ms)` when the token is an integer in [TIME_MIN_MS, TIME_MAX_MS).
fn ms_token(v: &RawValue) -> Option<i64> {
    int_token(v).filter(|ms| (TIME_MIN_MS..TIME_MAX_MS).contains(ms))
}

/// A JSON number as DECIMAL(18,8), rounding half up, with the Python rules' reasons.
pub fn price(token: &str) -> Result<i64, Reason> {
    if !is_number_token(token) {
        return Err(Reason::BadPrice);
    }
    let (negative, rest) = match token.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, token),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // Exponents beyond ±10^15 saturate: either way the value is far outside the range.
    let exp: i64 = {
        let (neg, d) = match exp.as_bytes().first() {
            Some(b'-') => (true, &exp[1..]),
            Some(b'+') => (false, &exp[1..]),
            _ => (false, exp),
        };
        let d = d.trim_start_matches('0');
        let mag = if d.len() > 15 {
            1_000_000_000_000_000
        } else {
            d.parse::<i64>().unwrap_or(0)
        };
        if neg {
            -mag
        } else {
            mag
        }
    };
    // The digits D and the exponent E with value = D × 10^E, D without leading zeros. Short
    // mantissas (all real prices) use a stack buffer.
    let mut stack = [0u8; 40];
    let heap: Vec<u8>;
    let n = int_part.len() + frac_part.len();
    let all: &[u8] = if n <= stack.len() {
        stack[..int_part.len()].copy_from_slice(int_part.as_bytes());
        stack[int_part.len()..n].copy_from_slice(frac_part.as_bytes());
        &stack[..n]
    } else {
        heap = int_part.bytes().chain(frac_part.bytes()).collect();
        &heap
    };
    let first = all.iter().position(|&b| b != b'0');
    let Some(first) = first else {
        return Err(Reason::NonPositivePrice); // zero, of either sign
    };
    let digits = &all[first..];
    let e = exp - frac_part.len() as i64;
    let adjusted = digits.len() as i64 - 1 + e;
    if adjusted >= (PRICE_PRECISION - PRICE_SCALE) as i64 {
        return Err(Reason::BadPrice);
    }
    if adjusted < -(PRICE_SCALE as i64) - 2 {
        return Err(Reason::NonPositivePrice);
    }
    let shift = e + PRICE_SCALE as i64; // unscaled = D × 10^shift
    let unscaled: i128 = if shift >= 0 {
        digits
            .iter()
            .fold(0i128, |acc, &b| acc * 10 + (b - b'0') as i128)
            * 10i128.pow(shift as u32)
    } else {
        let drop = (-shift) as usize;
        let keep = digits.len().saturating_sub(drop);
        let kept = digits[..keep]
            .iter()
            .fold(0i128, |acc, &b| acc * 10 + (b - b'0') as i128);
        let next = if drop <= digits.len() {
            digits[keep]
        } else {
            b'0'
        };
        kept + i128::from(next >= b'5')
    };
    if unscaled >= 10i128.pow(PRICE_PRECISION) {
        return Err(Reason::BadPrice);
    }
    if negative || unscaled == 0 {
        return Err(Reason::NonPositivePrice);
    }
    Ok(unscaled as i64)
}

fn string_token<'a>(v: &'a RawValue) -> Option<Cow<'a, str>> {
    let t = v.get();
    if !t.starts_with('"') {
        return None;
    }
    if !t.contains('\\') {
        // A JSON string without escapes is its own text between the quotes.
        return Some(Cow::Borrowed(&t[1..t.len() - 1]));
    }
    serde_json::from_str::<Cow<'a, str>>(t).ok()
}

fn symbol(v: Option<&RawValue>, strings: &mut Interner) -> Result<u32, Reason> {
    if is_null(v) {
        return Err(Reason::MissingSymbol);
    }
    let s = string_token(v.expect("not null")).ok_or(Reason::BadSymbol)?;
    let s = s.trim_matches(|c| SYMBOL_STRIP.contains(c));
    if s.is_empty() {
        return Err(Reason::MissingSymbol);
    }
    if s.len() > SYMBOL_MAX_LEN || !s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(Reason::BadSymbol);
    }
    if s.bytes().any(|b| b.is_ascii_lowercase()) {
        strings.scratch.clear();
        strings.scratch.push_str(s);
        strings.scratch.make_ascii_uppercase();
        return Ok(strings.scratch_id());
    }
    Ok(strings.id(s))
}

fn volume(v: Option<&RawValue>) -> Result<Option<f64>, Reason> {
    if is_null(v) {
        return Ok(None);
    }
    let t = v.expect("not null").get();
    if !is_number_token(t) {
        return Err(Reason::BadVolume);
    }
    let x: f64 = t.parse().map_err(|_| Reason::BadVolume)?;
    if x >= 0.0 && x != f64::INFINITY {
        Ok(Some(x))
    } else {
        Err(Reason::BadVolume)
    }
}

fn conditions(v: Option<&RawValue>, strings: &mut Interner) -> Result<Option<u32>, Reason> {
    if is_null(v) {
        return Ok(None);
    }
    let t = v.expect("not null").get();
    if let Some(joined) = simple_string_list(t, &mut strings.scratch) {
        return joined.map(|()| Some(strings.scratch_id()));
    }
    let list: Vec<Cow<str>> = serde_json::from_str(t).map_err(|_| Reason::BadConditions)?;
    if list.iter().any(|c| c.contains(CONDITIONS_SEPARATOR)) {
        return Err(Reason::BadConditions);
    }
    Ok(Some(strings.id(&list.join(CONDITIONS_SEPARATOR))))
}

/// [start, end) of a UTC day in milliseconds.
pub fn day_bounds(day: Day) -> (i64, i64) {
    let start = chrono::NaiveDate::from_ymd_opt(day.year, day.month, day.day)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(i64::MIN, |t| t.and_utc().timestamp_millis());
    (start, start.saturating_add(86_400_000))
}

/// `["a","b"]` without escapes, joined into `out`, in one pass; `None` sends anything else to serde.
fn simple_string_list(t: &str, out: &mut String) -> Option<Result<(), Reason>> {
    let b = t.as_bytes();
    if b.first() != Some(&b'[') || b.contains(&b'\\') {
        return None;
    }
    let ws = |i: &mut usize| {
        while matches!(b.get(*i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            *i += 1;
        }
    };
    out.clear();
    let mut items = 0;
    let mut i = 1;
    ws(&mut i);
    if b.get(i) == Some(&b']') {
        return (i + 1 == b.len()).then_some(Ok(()));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = i + 1 + b[i + 1..].iter().position(|&c| c == b'"')?;
        let item = &t[i + 1..end];
        if item.contains(CONDITIONS_SEPARATOR) {
            return Some(Err(Reason::BadConditions));
        }
        if items > 0 {
            out.push_str(CONDITIONS_SEPARATOR);
        }
        out.push_str(item);
        items += 1;
        i = end + 1;
        ws(&mut i);
        match b.get(i) {
            Some(b',') => {
                i += 1;
                ws(&mut i);
            }
            Some(b']') => return (i + 1 == b.len()).then_some(Ok(())),
            _ => return None,
        }
    }
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
