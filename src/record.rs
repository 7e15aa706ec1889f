//! The trade record: the data contract between ingestion and every later stage.
//!
//! One JSON object per trade, the value of a Kafka message keyed by symbol (see
//! `docs/record-format.md`). Prices and volumes are copied from the Finnhub frame as the exact
//! JSON number text they arrived as, so `129.575` stays `129.575` and `0.00001234` stays
//! `0.00001234` byte for byte.

use std::fmt::Write as _;

/// Version of the record layout; bump when a key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// One validated trade, borrowing the text of the frame it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade<'a> {
    pub symbol: std::borrow::Cow<'a, str>,
    /// The price exactly as written in the frame (a JSON number).
    pub price: &'a str,
    /// The volume exactly as written in the frame, `None` where the frame had none.
    pub volume: Option<&'a str>,
    /// Trade time, UNIX milliseconds UTC.
    pub trade_ts: i64,
    /// Trade conditions as strings; `None` where the frame had `null` or no `c`.
    pub conditions: Option<Vec<String>>,
}

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Finnhub,
    Quote,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Finnhub => "finnhub",
            Source::Quote => "finnhub_quote",
        }
    }
}

impl Trade<'_> {
    /// Appends the record's JSON object to `out`.
    pub fn write_json(&self, received_ts: i64, source: Source, out: &mut String) {
        out.push_str("{\"symbol\":");
        push_json_string(out, &self.symbol);
        out.push_str(",\"price\":");
        out.push_str(self.price);
        out.push_str(",\"volume\":");
        out.push_str(self.volume.unwrap_or("null"));
        let _ = write!(out, ",\"trade_ts\":{},\"conditions\":", self.trade_ts);
        match &self.conditions {
            None => out.push_str("null"),
            Some(list) => {
                out.push('[');
                for (i, c) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_string(out, c);
                }
                out.push(']');
            }
        }
        let _ = write!(
            out,
            ",\"received_ts\":{received_ts},\"source\":\"{}\",\"schema_version\":{SCHEMA_VERSION}}}",
            source.as_str()
        );
    }

    pub fn to_json(&self, received_ts: i64, source: Source) -> String {
        let mut out = String::with_capacity(160);
        self.write_json(received_ts, source, &mut out);
        out
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json's escaping is the reference; the fast path above covers plain ASCII.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// Milliseconds since the UNIX epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keeps_price_text_and_contract_keys() {
        let t = Trade {
            symbol: "IC MARKETS:1".into(),
            price: "0.00001234",
            volume: Some("0"),
            trade_ts: 1672348887785,
            conditions: Some(vec!["1".into(), "24".into()]),
        };
        let json = t.to_json(1672348887790, Source::Finnhub);
        assert_eq!(
            json,
            r#"{"symbol":"IC MARKETS:1","price":0.00001234,"volume":0,"trade_ts":1672348887785,"conditions":["1","24"],"received_ts":1672348887790,"source":"finnhub","schema_version":1}"#
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["price"].as_f64(), Some(0.00001234));
    }

    #[test]
    fn odd_symbols_are_escaped() {
        let t = Trade {
            symbol: "A\"B\\é".into(),
            price: "1",
            volume: None,
            trade_ts: 1,
            conditions: None,
        };
        let v: serde_json::Value = serde_json::from_str(&t.to_json(2, Source::Finnhub)).unwrap();
        assert_eq!(v["symbol"], "A\"B\\é");
        assert!(v["volume"].is_null() && v["conditions"].is_null());
    }
}
