//! The simulator's ledger: one JSON line per trade it actually delivered to a connection, so a
//! test can compare what was sent with what arrived, exactly.

use super::market::GenTrade;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Mutex;

pub struct Ledger {
    out: Mutex<BufWriter<File>>,
}

impl Ledger {
    pub fn create(path: &str) -> std::io::Result<Self> {
        Ok(Self {
            out: Mutex::new(BufWriter::with_capacity(1 << 20, File::create(path)?)),
        })
    }

    /// Appends the trades of one delivered frame; price and volume stay exact text.
    pub fn record(&self, trades: &[GenTrade]) {
        let mut line = String::with_capacity(trades.len() * 80);
        for t in trades {
            line.push_str("{\"symbol\":");
            crate::record::push_json_string(&mut line, &t.symbol);
            line.push_str(&format!(
                ",\"price\":\"{}\",\"volume\":\"{}\",\"trade_ts\":{}}}\n",
                t.price, t.volume, t.ts
            ));
        }
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    pub fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.flush();
    }
}
