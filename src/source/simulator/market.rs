//! A random-walk market: one price per symbol, formatted as Finnhub does (2-4 decimals for
//! stocks, 5 for FX, 8 for crypto), and trade frames built from it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stock,
    Crypto,
    Forex,
}

impl Kind {
    pub fn of(symbol: &str) -> Kind {
        let upper = symbol.to_ascii_uppercase();
        if upper.starts_with("BINANCE:") || upper.starts_with("COINBASE:") || upper.contains("USDT")
        {
            Kind::Crypto
        } else if upper.starts_with("OANDA:") || upper.starts_with("FXCM:") || upper.contains(' ') {
            Kind::Forex
        } else {
            Kind::Stock
        }
    }
}

#[derive(Debug, Clone)]
pub struct SymbolState {
    pub kind: Kind,
    /// Price in units of 10^-scale.
    pub ticks: i64,
    pub scale: u32,
    pub open_ticks: i64,
    pub high_ticks: i64,
    pub low_ticks: i64,
    pub last_ts: i64,
}

impl SymbolState {
    fn new(symbol: &str, rng: &mut StdRng) -> Self {
        let kind = Kind::of(symbol);
        let (scale, ticks) = match kind {
            Kind::Stock => (3, rng.random_range(10_000..500_000)),
            Kind::Forex => (5, rng.random_range(50_000..200_000)),
            Kind::Crypto if symbol.to_ascii_uppercase().contains("SHIB") => {
                (8, rng.random_range(1_000..5_000))
            }
            Kind::Crypto => (8, rng.random_range(1_000_000_000_000..6_000_000_000_000)),
        };
        Self {
            kind,
            ticks,
            scale,
            open_ticks: ticks,
            high_ticks: ticks,
            low_ticks: ticks,
            last_ts: 0,
        }
    }

    fn step(&mut self, rng: &mut StdRng) {
        let span = (self.ticks / 2000).max(1);
        self.ticks = (self.ticks + rng.random_range(-span..=span)).max(1);
        self.high_ticks = self.high_ticks.max(self.ticks);
        self.low_ticks = self.low_ticks.min(self.ticks);
    }

    pub fn price_text(&self) -> String {
        format_decimal(self.ticks, self.scale)
    }

    pub fn price_f64(&self, ticks: i64) -> f64 {
        ticks as f64 / 10f64.powi(self.scale as i32)
    }
}

/// `ticks * 10^-scale` as the shortest exact decimal text: `129575, 3` → `129.575`.
pub fn format_decimal(ticks: i64, scale: u32) -> String {
    let neg = ticks < 0;
    let digits = ticks.unsigned_abs().to_string();
    let scale = scale as usize;
    let (int, frac) = if digits.len() > scale {
        digits.split_at(digits.len() - scale)
    } else {
        ("0", digits.as_str())
    };
    let frac = format!("{:0>width$}", frac, width = scale);
    let frac = frac.trim_end_matches('0');
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// One generated trade, as text fragments ready for a frame and for the ledger.
#[derive(Debug, Clone)]
pub struct GenTrade {
    pub symbol: String,
    pub price: String,
    pub volume: String,
    pub ts: i64,
    /// The `c` field as JSON text, or `None` to leave it out.
    pub conditions: Option<&'static str>,
}

pub struct Market {
    states: HashMap<String, SymbolState>,
    rng: StdRng,
}

const CONDITIONS: [Option<&str>; 6] = [
    Some(r#"["1","24","12"]"#),
    Some(r#"["1"]"#),
    Some("[]"),
    Some("null"),
    None,
    Some(r#"["12","37"]"#),
];

impl Market {
    pub fn new(seed: u64) -> Self {
        Self {
            states: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn state(&mut self, symbol: &str) -> &mut SymbolState {
        let rng = &mut self.rng;
        self.states
            .entry(symbol.to_string())
            .or_insert_with(|| SymbolState::new(symbol, rng))
    }

    pub fn peek(&self, symbol: &str) -> Option<&SymbolState> {
        self.states.get(symbol)
    }

    /// Generates one trade on a random symbol of `symbols` at time `now_ms`; with probability
    /// `out_of_order` its time goes backwards by up to two seconds.
    pub fn trade(&mut self, symbols: &[String], now_ms: i64, out_of_order: f64) -> GenTrade {
        let i = self.rng.random_range(0..symbols.len());
        let backwards = self.rng.random_bool(out_of_order.clamp(0.0, 1.0));
        let skew = self.rng.random_range(1..2000);
        let cond = CONDITIONS[self.rng.random_range(0..CONDITIONS.len())];
        let vol_draw: u32 = self.rng.random_range(1..500);
        let frac_draw: u32 = self.rng.random_range(1..100_000);
        let symbol = &symbols[i];
        let rng = &mut self.rng;
        let state = self
            .states
            .entry(symbol.clone())
            .or_insert_with(|| SymbolState::new(symbol, rng));
        state.step(rng);
        let ts = if backwards { now_ms - skew } else { now_ms };
        state.last_ts = ts;
        let volume = match state.kind {
            Kind::Stock => vol_draw.to_string(),
            Kind::Crypto => format_decimal(frac_draw as i64, 5),
            Kind::Forex => "0".to_string(),
        };
        GenTrade {
            symbol: symbol.clone(),
            price: state.price_text(),
            volume,
            ts,
            conditions: cond,
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }
}

/// Builds a `trade` frame holding `trades`.
pub fn trade_frame(trades: &[GenTrade], out: &mut String) {
    out.clear();
    out.push_str("{\"data\":[");
    for (i, t) in trades.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"s\":");
        crate::record::push_json_string(out, &t.symbol);
        let _ = write!(out, ",\"p\":{},\"t\":{},\"v\":{}", t.price, t.ts, t.volume);
        if let Some(c) = t.conditions {
            out.push_str(",\"c\":");
            out.push_str(c);
        }
        out.push('}');
    }
    out.push_str("],\"type\":\"trade\"}");
}

/// Frames the client must refuse, one of each kind the protocol notes describe.
pub const MALFORMED: &[&str] = &[
    "{not json",
    r#"{"type":"trade","data":[{"p":101.5,"t":1672348887785,"v":1}]}"#,
    r#"{"type":"trade","data":[{"s":"AAPL","t":1672348887785,"v":1}]}"#,
    r#"{"type":"trade","data":[{"s":"AAPL","p":"abc","t":1672348887785}]}"#,
    r#"{"type":"mystery","data":[]}"#,
    r#"{"type":"trade"}"#,
    "[1,2,3]",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_text() {
        assert_eq!(format_decimal(129575, 3), "129.575");
        assert_eq!(format_decimal(1234, 8), "0.00001234");
        assert_eq!(format_decimal(129500, 3), "129.5");
        assert_eq!(format_decimal(129000, 3), "129");
    }

    #[test]
    fn generated_frames_parse_back() {
        let mut m = Market::new(7);
        let symbols: Vec<String> = ["AAPL", "BINANCE:BTCUSDT", "OANDA:EUR_USD", "IC MARKETS:1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let trades: Vec<GenTrade> = (0..200)
            .map(|i| m.trade(&symbols, 1_700_000_000_000 + i, 0.1))
            .collect();
        let mut text = String::new();
        trade_frame(&trades, &mut text);
        match crate::source::frame::parse(&text).unwrap() {
            crate::source::frame::Frame::Trades {
                trades: parsed,
                rejected,
            } => {
                assert!(rejected.is_empty());
                assert_eq!(parsed.len(), 200);
                for (a, b) in parsed.iter().zip(&trades) {
                    assert_eq!(a.price, b.price);
                    assert_eq!(a.symbol, b.symbol);
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
