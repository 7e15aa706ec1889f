//! The REST half of the simulator (`/quote`, `/stock/market-status`, premium `/stock/candle`)
//! and the small HTTP/1.1 helpers the WebSocket half uses to refuse an upgrade.

use super::Shared;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Request {
    pub path: String,
    pub query: HashMap<String, String>,
    headers: Vec<(String, String)>,
    /// Bytes of the request head, consumed from the socket before replying.
    pub head_len: usize,
}

impl Request {
    pub fn parse(head: &str) -> Self {
        let mut lines = head.split("\r\n");
        let target = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Self {
            path: path.to_string(),
            query,
            headers,
            head_len: head.len() + 4,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The API key from `?token=` or the `X-Finnhub-Token` header.
    pub fn token(&self) -> Option<&str> {
        self.query
            .get("token")
            .map(String::as_str)
            .or_else(|| self.header("x-finnhub-token"))
    }
}

/// Checks a presented key against the configured one; `Err` holds Finnhub's error body.
pub fn check_token(expected: &Option<String>, presented: Option<&str>) -> Result<(), &'static str> {
    match (expected, presented) {
        (_, None) | (_, Some("")) => Err(r#"{"error":"Please use an API key."}"#),
        (Some(want), Some(got)) if want != got => Err(r#"{"error":"Invalid API key."}"#),
        _ => Ok(()),
    }
}

/// Writes a complete HTTP/1.1 response and closes the write side.
pub async fn respond(stream: &mut TcpStream, status: u16, reason: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Finnhub's limits: 60 calls a minute (free plan) and 30 a second (every plan).
pub struct RateLimiter {
    per_minute: u32,
    per_second: u32,
    calls: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, per_second: u32) -> Self {
        Self {
            per_minute,
            per_second,
            calls: Mutex::new(VecDeque::new()),
        }
    }

    pub fn allow(&self, now: Instant) -> bool {
        let Ok(mut calls) = self.calls.lock() else {
            return false;
        };
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            calls.pop_front();
        }
        let last_second = calls
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < Duration::from_secs(1))
            .count();
        if calls.len() >= self.per_minute as usize || last_second >= self.per_second as usize {
            return false;
        }
        calls.push_back(now);
        true
    }
}

pub async fn serve(mut stream: TcpStream, request: Request, shared: &Shared) {
    let mut head = vec![0u8; request.head_len];
    let _ = stream.read_exact(&mut head).await;
    shared.metrics.incr("rest_requests");
    let path = request
        .path
        .trim_start_matches("/api/v1")
        .trim_end_matches('/');
    if let Err(body) = check_token(&shared.cfg.token, request.token()) {
        return respond(&mut stream, 401, "Unauthorized", body).await;
    }
    if !shared.rest.allow(Instant::now()) {
        shared.metrics.incr("rest_rate_limited");
        let body = r#"{"error":"API limit reached. Please try again later. Remaining Limit: 0"}"#;
        return respond(&mut stream, 429, "Too Many Requests", body).await;
    }
    match path {
        "/quote" => {
            let symbol = request.query.get("symbol").cloned().unwrap_or_default();
            let body = quote(shared, &symbol);
            respond(&mut stream, 200, "OK", &body).await
        }
        "/stock/market-status" => {
            let exchange = request
                .query
                .get("exchange")
                .cloned()
                .unwrap_or("US".into());
            let body = serde_json::json!({
                "exchange": exchange, "holiday": null, "isOpen": true, "session": "regular",
                "timezone": "America/New_York", "t": crate::record::now_ms() / 1000,
            });
            respond(&mut stream, 200, "OK", &body.to_string()).await
        }
        p if p.starts_with("/stock/candle") || p.starts_with("/crypto/candle") => {
            let body = r#"{"error":"You don't have access to this resource."}"#;
            respond(&mut stream, 403, "Forbidden", body).await
        }
        _ => respond(&mut stream, 404, "Not Found", r#"{"error":"Not found"}"#).await,
    }
}

fn quote(shared: &Shared, symbol: &str) -> String {
    let known = shared.cfg.symbols.is_empty() || shared.cfg.symbols.iter().any(|s| s == symbol);
    let Ok(mut market) = shared.market.lock() else {
        return "{}".into();
    };
    if !known || symbol.is_empty() {
        return r#"{"c":0,"d":null,"dp":null,"h":0,"l":0,"o":0,"pc":0,"t":0}"#.into();
    }
    let s = market.state(symbol).clone();
    let c = s.price_f64(s.ticks);
    let pc = s.price_f64(s.open_ticks);
    serde_json::json!({
        "c": c, "d": c - pc, "dp": if pc != 0.0 { (c - pc) / pc * 100.0 } else { 0.0 },
        "h": s.price_f64(s.high_ticks), "l": s.price_f64(s.low_ticks), "o": pc, "pc": pc,
        "t": crate::record::now_ms() / 1000,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_enforces_per_second_and_per_minute() {
        let l = RateLimiter::new(60, 30);
        let t0 = Instant::now();
        assert_eq!((0..40).filter(|_| l.allow(t0)).count(), 30);
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!((0..40).filter(|_| l.allow(t1)).count(), 30);
        let t2 = t0 + Duration::from_secs(3);
        assert!(!l.allow(t2), "60 per minute used up");
        assert!(l.allow(t0 + Duration::from_secs(61)));
    }

    #[test]
    fn tokens() {
        let want = Some("k".to_string());
        assert!(check_token(&want, Some("k")).is_ok());
        assert!(check_token(&want, Some("x"))
            .unwrap_err()
            .contains("Invalid"));
        assert!(check_token(&None, None).unwrap_err().contains("Please use"));
        assert!(check_token(&None, Some("any")).is_ok());
    }
}
