//! The REST quote poller: `/quote` snapshots within the plan's rate limit (a token bucket
//! below 60 calls a minute by default, never above 30 a second), published to their own topic.
//! Useful when markets are closed or a free key sees few US trades.

use super::{Error, Result};
use crate::config::FinnhubConfig;
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::record::{now_ms, push_json_string};
use crate::redact::redact_url;
use crate::shutdown::Shutdown;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const COUNTERS: &[&str] = &[
    "quote_requests",
    "unknown_symbols",
    "unchanged",
    "http_errors",
];

#[derive(Deserialize)]
struct Quote {
    c: f64,
    #[serde(default)]
    d: Option<f64>,
    #[serde(default)]
    dp: Option<f64>,
    #[serde(default)]
    h: f64,
    #[serde(default)]
    l: f64,
    #[serde(default)]
    o: f64,
    #[serde(default)]
    pc: f64,
    t: i64,
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        let rate = (per_minute.max(1) as f64 / 60.0).min(30.0);
        Self {
            rate,
            burst: 1.0,
            tokens: 1.0,
            at: Instant::now(),
        }
    }

    /// How long to wait before the next call may go out (and takes its token).
    fn wait(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            self.tokens -= 1.0;
            Duration::from_secs_f64(wait)
        }
    }
}

fn record(symbol: &str, q: &Quote, received_ms: i64) -> String {
    let mut out = String::with_capacity(200);
    out.push_str("{\"symbol\":");
    push_json_string(&mut out, symbol);
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |x| x.to_string());
    out.push_str(&format!(
        ",\"price\":{},\"open\":{},\"high\":{},\"low\":{},\"prev_close\":{},\"change\":{},\"change_pct\":{},\"quote_ts\":{},\"received_ts\":{received_ms},\"source\":\"finnhub_quote\",\"schema_version\":1}}",
        q.c, q.o, q.h, q.l, q.pc, opt(q.d), opt(q.dp), q.t * 1000
    ));
    out
}

/// Checks what can be checked before connecting anywhere: the key, the symbols, the URL.
pub fn validate(cfg: &FinnhubConfig) -> Result<()> {
    if cfg.api_key.as_deref().unwrap_or("").is_empty() && cfg.rest_url.contains("finnhub.io") {
        return Err(Error::NoApiKey);
    }
    if cfg.symbols.is_empty() {
        return Err(Error::Other("no symbols configured".into()));
    }
    let valid = url::Url::parse(&cfg.rest_url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !valid {
        return Err(Error::Other(format!(
            "invalid REST URL {:?}: expected http(s)://HOST/api/v1",
            redact_url(&cfg.rest_url)
        )));
    }
    Ok(())
}

/// The wait after another failed request: twice the last one, at least `floor`, at most 60 s.
fn doubled(backoff: Duration, floor: Duration) -> Duration {
    (backoff * 2).clamp(floor, Duration::from_secs(60))
}

type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<bytes::Bytes>,
>;

/// What one `/quote` request came back with.
enum Answer {
    /// 200: the body.
    Body(bytes::Bytes),
    /// Worth asking again after at least `floor` (doubled while they keep failing).
    Retry {
        counter: &'static str,
        floor: Duration,
        why: String,
    },
}

/// Asks for one symbol's quote. The key goes in a header, not the query string: it never
/// appears in a URL we might log.
async fn request(
    client: &HttpClient,
    base: &str,
    key: Option<&str>,
    symbol: &str,
) -> Result<Answer> {
    let encoded: String = url::form_urlencoded::byte_serialize(symbol.as_bytes()).collect();
    let uri = format!("{base}/quote?symbol={encoded}");
    let mut req = http::Request::get(&uri);
    if let Some(k) = key {
        req = req.header("X-Finnhub-Token", k);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| Error::Other(e.to_string()))?;
    let failed = |why: String| Answer::Retry {
        counter: "http_errors",
        floor: Duration::from_secs(1),
        why,
    };
    let resp = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Ok(failed(format!(
                "quote request to {} failed: {e}",
                redact_url(&uri)
            )))
        }
        Err(_) => {
            return Ok(failed(format!(
                "quote request to {} got no answer in 10s",
                redact_url(&uri)
            )))
        }
    };
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(match status {
        200 => Answer::Body(body),
        401 | 403 => return Err(Error::Unauthorized),
        429 => Answer::Retry {
            counter: "rate_limited",
            floor: Duration::from_secs(2),
            why: "finnhub REST limit reached (429)".into(),
        },
        other => failed(format!("quote {symbol}: HTTP {other}")),
    })
}

/// The last quote published per symbol, so an unchanged snapshot is not published again.
#[derive(Default)]
struct Seen(HashMap<String, (i64, u64)>);

enum Fresh {
    New,
    Unchanged,
    /// Finnhub answers an unknown symbol with 200 and all zeros; `first` the first time.
    Unknown {
        first: bool,
    },
}

impl Seen {
    fn check(&mut self, symbol: &str, q: &Quote) -> Fresh {
        if q.t == 0 {
            let first = self.0.insert(symbol.to_string(), (0, 0)).is_none();
            return Fresh::Unknown { first };
        }
        let fingerprint = (q.t, q.c.to_bits());
        if self.0.get(symbol) == Some(&fingerprint) {
            return Fresh::Unchanged;
        }
        self.0.insert(symbol.to_string(), fingerprint);
        Fresh::New
    }
}

/// Polls `/quote` for every symbol in turn until `shutdown` or `max_quotes` snapshots.
pub async fn run_quotes(
    cfg: &FinnhubConfig,
    producer: Arc<TradeProducer>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    max_quotes: Option<u64>,
) -> Result<()> {
    validate(cfg)?;
    let key = cfg.api_key.as_deref().filter(|k| !k.is_empty());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(https);
    let base = cfg.rest_url.trim_end_matches('/');
    let mut bucket = Bucket::new(cfg.quotes_per_minute);
    let mut backoff = Duration::ZERO;
    let mut seen = Seen::default();
    let mut published = 0u64;
    for symbol in cfg.symbols.iter().cycle() {
        let wait = bucket.wait().max(backoff);
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        metrics.incr("quote_requests");
        let body = match request(&client, base, key, symbol).await? {
            Answer::Body(body) => body,
            Answer::Retry {
                counter,
                floor,
                why,
            } => {
                metrics.incr(counter);
                backoff = doubled(backoff, floor);
                log::warn!("{why}; retrying in {backoff:?}");
                continue;
            }
        };
        backoff = Duration::ZERO;
        let Ok(q) = serde_json::from_slice::<Quote>(&body) else {
            metrics.incr("rejected");
            producer
                .send_dead_letter("bad_quote", &String::from_utf8_lossy(&body), "quotes")
                .await;
            continue;
        };
        match seen.check(symbol, &q) {
            Fresh::New => {}
            Fresh::Unchanged => {
                metrics.incr("unchanged");
                continue;
            }
            Fresh::Unknown { first } => {
                if first {
                    metrics.incr("unknown_symbols");
                    log::warn!("finnhub does not know symbol {symbol:?} (quote with t = 0)");
                }
                continue;
            }
        }
        let payload = record(symbol, &q, now_ms());
        if !producer
            .send_trade(symbol, payload.as_bytes(), Instant::now())
            .await
        {
            continue;
        }
        metrics.incr("trades");
        published += 1;
        if max_quotes.is_some_and(|m| published >= m) {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rest_url_that_is_not_one_fails_before_connecting() {
        let mut c = crate::source::client::tests::cfg("ws://127.0.0.1:9/", Some("k"), 1);
        for (url, ok) in [
            ("http://127.0.0.1:8765/api/v1", true),
            ("https://finnhub.io/api/v1", true),
            ("garbage", false),
            ("ftp://host/api/v1", false),
            ("http://", false),
        ] {
            c.rest_url = url.into();
            let result = validate(&c);
            assert_eq!(result.is_ok(), ok, "{url}: {result:?}");
            if let Err(e) = result {
                assert!(
                    e.to_string().contains("expected http(s)://HOST/api/v1"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn bucket_spaces_calls_at_the_plan_rate() {
        let mut b = Bucket::new(60);
        assert_eq!(b.wait(), Duration::ZERO);
        let w = b.wait();
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        let fast = Bucket::new(6000);
        assert_eq!(fast.rate, 30.0, "never above 30 calls a second");
    }

    #[test]
    fn quote_record_is_json() {
        let q = Quote {
            c: 175.43,
            d: None,
            dp: Some(1.41),
            h: 175.77,
            l: 173.11,
            o: 173.32,
            pc: 172.99,
            t: 1636322400,
        };
        let v: serde_json::Value = serde_json::from_str(&record("AAPL", &q, 5)).unwrap();
        assert_eq!(v["price"], 175.43);
        assert!(v["change"].is_null());
        assert_eq!(v["quote_ts"], 1636322400000i64);
    }
}
