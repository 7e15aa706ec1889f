//! Parsing and validation of Finnhub WebSocket frames.
//!
//! Every frame is classified: trades (each element validated on its own), ping, error, news,
//! press releases, or rejected with a machine-readable reason. Nothing here panics on any input;
//! the property tests in this file and `tests/frame_fuzz.rs` feed it arbitrary bytes.

use crate::record::Trade;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Why a frame or a trade inside it was not accepted. Stable strings: they are the `reason`
/// of dead-letter records and the labels of the rejection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    NotJson,
    NotObject,
    MissingType,
    UnknownType,
    TradeWithoutData,
    TradeNotObject,
    MissingSymbol,
    MissingPrice,
    BadPrice,
    MissingTime,
    BadTime,
    BadVolume,
    BadConditions,
    BinaryFrame,
    Oversized,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::NotJson => "not_json",
            Reject::NotObject => "not_object",
            Reject::MissingType => "missing_type",
            Reject::UnknownType => "unknown_type",
            Reject::TradeWithoutData => "trade_without_data",
            Reject::TradeNotObject => "trade_not_object",
            Reject::MissingSymbol => "missing_symbol",
            Reject::MissingPrice => "missing_price",
            Reject::BadPrice => "bad_price",
            Reject::MissingTime => "missing_time",
            Reject::BadTime => "bad_time",
            Reject::BadVolume => "bad_volume",
            Reject::BadConditions => "bad_conditions",
            Reject::BinaryFrame => "binary_frame",
            Reject::Oversized => "oversized",
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One element of a trade frame that failed validation, with its raw JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedTrade<'a> {
    pub reason: Reject,
    pub raw: &'a str,
}

/// What a frame turned out to be.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    Trades {
        trades: Vec<Trade<'a>>,
        rejected: Vec<RejectedTrade<'a>>,
    },
    Ping,
    Error(String),
    /// Premium `news` / `pr` streams: counted, the items are not trades.
    Other {
        kind: &'static str,
        items: usize,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    #[serde(borrow, default)]
    s: Option<&'a RawValue>,
    #[serde(borrow, default)]
    p: Option<&'a RawValue>,
    #[serde(borrow, default)]
    t: Option<&'a RawValue>,
    #[serde(borrow, default)]
    v: Option<&'a RawValue>,
    #[serde(borrow, default)]
    c: Option<&'a RawValue>,
}

/// Classifies one text frame.
pub fn parse(text: &str) -> Result<Frame<'_>, Reject> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(if serde_json::from_str::<&RawValue>(text).is_ok() {
            Reject::NotObject
        } else {
            Reject::NotJson
        });
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|_| Reject::NotJson)?;
    let kind = env.kind.ok_or(Reject::MissingType)?;
    let kind = json_str(kind).ok_or(Reject::MissingType)?;
    match kind.as_ref() {
        "trade" => {
            let data = env.data.ok_or(Reject::TradeWithoutData)?;
            let items: Vec<&RawValue> =
                serde_json::from_str(data.get()).map_err(|_| Reject::TradeWithoutData)?;
            let mut trades = Vec::with_capacity(items.len());
            let mut rejected = Vec::new();
            for item in items {
                match parse_trade(item) {
                    Ok(t) => trades.push(t),
                    Err(reason) => rejected.push(RejectedTrade {
                        reason,
                        raw: item.get(),
                    }),
                }
            }
            Ok(Frame::Trades { trades, rejected })
        }
        "ping" => Ok(Frame::Ping),
        "error" => Ok(Frame::Error(
            env.msg.map(Cow::into_owned).unwrap_or_default(),
        )),
        "news" | "pr" => {
            let items = env
                .data
                .and_then(|d| serde_json::from_str::<Vec<&RawValue>>(d.get()).ok())
                .map(|v| v.len())
                .unwrap_or(0);
            Ok(Frame::Other {
                kind: if kind == "news" { "news" } else { "pr" },
                items,
            })
        }
        _ => Err(Reject::UnknownType),
    }
}

fn parse_trade(item: &RawValue) -> Result<Trade<'_>, Reject> {
    let raw: RawTrade<'_> = serde_json::from_str(item.get()).map_err(|_| Reject::TradeNotObject)?;
    let symbol: Cow<'_, str> = match raw.s {
        None => return Err(Reject::MissingSymbol),
        Some(s) => json_str(s).ok_or(Reject::MissingSymbol)?,
    };
    if symbol.trim().is_empty() {
        return Err(Reject::MissingSymbol);
    }
    let price = raw.p.ok_or(Reject::MissingPrice)?.get();
    if price == "null" {
        return Err(Reject::MissingPrice);
    }
    if !is_finite_number(price) {
        return Err(Reject::BadPrice);
    }
    let t = raw.t.ok_or(Reject::MissingTime)?.get();
    if t == "null" {
        return Err(Reject::MissingTime);
    }
    let trade_ts = parse_millis(t).ok_or(Reject::BadTime)?;
    let volume = match raw.v.map(RawValue::get) {
        None | Some("null") => None,
        Some(v) if is_finite_number(v) => Some(v),
        Some(_) => return Err(Reject::BadVolume),
    };
    let conditions = match raw.c.map(RawValue::get) {
        None | Some("null") => None,
        Some(c) => Some(parse_conditions(c).ok_or(Reject::BadConditions)?),
    };
    Ok(Trade {
        symbol,
        price,
        volume,
        trade_ts,
        conditions,
    })
}

/// A JSON string, borrowed from the frame unless it holds escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}

/// A JSON number (not a string, bool or object) that is finite as an f64.
fn is_finite_number(text: &str) -> bool {
    matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
        && text.parse::<f64>().map(f64::is_finite).unwrap_or(false)
}

/// UNIX milliseconds: a non-negative integer (an integral float such as `1.6e12` is accepted).
fn parse_millis(text: &str) -> Option<i64> {
    if let Ok(v) = text.parse::<i64>() {
        return (v >= 0).then_some(v);
    }
    let f: f64 = text.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9.2e18).then_some(f as i64)
}

/// Conditions are numeric strings; numbers are kept as their text, anything else is refused.
fn parse_conditions(text: &str) -> Option<Vec<String>> {
    let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    items
        .into_iter()
        .map(|item| {
            let raw = item.get();
            if raw.starts_with('"') {
                serde_json::from_str::<String>(raw).ok()
            } else if is_finite_number(raw) {
                Some(raw.to_string())
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trades(text: &str) -> (Vec<Trade<'_>>, Vec<RejectedTrade<'_>>) {
        match parse(text).unwrap() {
            Frame::Trades { trades, rejected } => (trades, rejected),
            other => panic!("not trades: {other:?}"),
        }
    }

    #[test]
    fn documented_trade_frame() {
        let (t, r) = trades(
            r#"{"type":"trade","data":[{"s":"AAPL","p":129.575,"t":1672348887785,"v":1,"c":["1","24","12"]},{"s":"BINANCE:BTCUSDT","p":0.00001234,"t":1672348887786,"v":0.5}]}"#,
        );
        assert!(r.is_empty());
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].symbol, "AAPL");
        assert_eq!(t[0].price, "129.575");
        assert_eq!(
            t[0].conditions.as_deref(),
            Some(&["1".to_string(), "24".into(), "12".into()][..])
        );
        assert_eq!(t[1].price, "0.00001234");
        assert_eq!(t[1].conditions, None);
    }

    #[test]
    fn conditions_variants_and_spaces_in_symbols() {
        let (t, _) = trades(
            r#"{"type":"trade","data":[{"s":"IC MARKETS:1","p":1.1,"t":1,"v":0,"c":[]},{"s":"A","p":2,"t":2,"v":1,"c":null},{"s":"B","p":3,"t":3,"c":[12]}]}"#,
        );
        assert_eq!(t[0].symbol, "IC MARKETS:1");
        assert_eq!(t[0].conditions, Some(vec![]));
        assert_eq!(t[1].conditions, None);
        assert_eq!(t[2].conditions, Some(vec!["12".to_string()]));
        assert_eq!(t[2].volume, None);
    }

    #[test]
    fn identical_trades_in_one_frame_are_two_trades() {
        let (t, _) = trades(
            r#"{"type":"trade","data":[{"s":"A","p":1,"t":1,"v":1},{"s":"A","p":1,"t":1,"v":1}]}"#,
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn each_bad_element_has_its_reason() {
        let (t, r) = trades(
            r#"{"type":"trade","data":[{"p":1,"t":1},{"s":"A","t":1},{"s":"A","p":"x","t":1},{"s":"A","p":1},{"s":"A","p":1,"t":-5},{"s":"A","p":1,"t":1,"v":"9"},{"s":"A","p":1,"t":1,"c":[true]},7,{"s":"OK","p":1,"t":1}]}"#,
        );
        let reasons: Vec<_> = r.iter().map(|x| x.reason).collect();
        assert_eq!(
            reasons,
            vec![
                Reject::MissingSymbol,
                Reject::MissingPrice,
                Reject::BadPrice,
                Reject::MissingTime,
                Reject::BadTime,
                Reject::BadVolume,
                Reject::BadConditions,
                Reject::TradeNotObject
            ]
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn control_frames() {
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(Frame::Ping));
        assert_eq!(
            parse(r#"{"type":"error","msg":"Subscribing to too many symbols"}"#),
            Ok(Frame::Error("Subscribing to too many symbols".into()))
        );
        assert_eq!(
            parse(r#"{"type":"news","data":[{"headline":"x"}]}"#),
            Ok(Frame::Other {
                kind: "news",
                items: 1
            })
        );
        assert_eq!(parse("not json"), Err(Reject::NotJson));
        assert_eq!(parse("[1]"), Err(Reject::NotObject));
        assert_eq!(parse(r#"{"data":[]}"#), Err(Reject::MissingType));
        assert_eq!(parse(r#"{"type":"quote"}"#), Err(Reject::UnknownType));
        assert_eq!(parse(r#"{"type":"trade"}"#), Err(Reject::TradeWithoutData));
    }
}
