//! The Finnhub WebSocket client: one connection per key, every symbol subscribed on every
//! connection ([`stream`](super::stream) reads and validates its frames), reconnects with
//! backoff.

use super::backoff::Backoff;
use super::stream::{Ended, Ingest, Ws};
use super::{Error, Result};
use crate::config::FinnhubConfig;
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::redact::redact_url;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Counter names the ingest loop maintains (the producer adds its own).
pub const COUNTERS: &[&str] = &[
    "frames",
    "bytes",
    "trades",
    "pings",
    "server_errors",
    "other_messages",
    "rejected",
    "duplicates",
    "connections",
    "reconnects",
    "silence_timeouts",
    "rate_limited",
    "first_frame_unix_us",
];

/// Builds the connection URL: the configured endpoint plus the `token` query parameter.
pub fn connection_url(cfg: &FinnhubConfig) -> Result<url::Url> {
    let mut url =
        url::Url::parse(&cfg.ws_url).map_err(|_| Error::BadUrl(redact_url(&cfg.ws_url)))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(Error::BadUrl(redact_url(&cfg.ws_url)));
    }
    match &cfg.api_key {
        Some(key) if !key.is_empty() => {
            url.query_pairs_mut().append_pair("token", key);
        }
        _ if url.host_str().is_some_and(|h| h.ends_with("finnhub.io")) => {
            return Err(Error::NoApiKey)
        }
        _ => {}
    }
    Ok(url)
}

/// Checks what can be checked before connecting.
pub fn validate(cfg: &FinnhubConfig) -> Result<()> {
    if cfg.symbols.len() > cfg.max_symbols {
        return Err(Error::TooManySymbols {
            count: cfg.symbols.len(),
            max: cfg.max_symbols,
        });
    }
    if cfg.symbols.is_empty() {
        return Err(Error::Other("no symbols configured".into()));
    }
    let periods = [
        ("backoff_initial_s", cfg.backoff_initial_s, 0.0),
        ("backoff_max_s", cfg.backoff_max_s, cfg.backoff_initial_s),
        ("stable_after_s", cfg.stable_after_s, 0.0),
        ("silence_timeout_s", cfg.silence_timeout_s, 0.0),
    ];
    for (key, value, floor) in periods {
        if !(value.is_finite() && value > 0.0 && value >= floor) {
            return Err(Error::Other(format!(
                "{key} = {value}: expected seconds above zero{}",
                if floor > 0.0 {
                    " and at least backoff_initial_s"
                } else {
                    ""
                }
            )));
        }
    }
    let floor = cfg.rate_limited_backoff_s;
    if !(floor.is_finite() && floor >= 0.0) {
        return Err(Error::Other(format!(
            "rate_limited_backoff_s = {floor}: must not be negative"
        )));
    }
    connection_url(cfg).map(|_| ())
}

/// Streams trades from the WebSocket into `producer` until `shutdown` fires, `max_trades`
/// trades were published, or the server refuses the key.
pub async fn run_ingest(
    cfg: &FinnhubConfig,
    producer: Arc<TradeProducer>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    max_trades: Option<u64>,
) -> Result<()> {
    validate(cfg)?;
    let url = connection_url(cfg)?;
    let shown_url = redact_url(url.as_str());
    let mut backoff = Backoff::new(
        Duration::from_secs_f64(cfg.backoff_initial_s),
        Duration::from_secs_f64(cfg.backoff_max_s),
    );
    let mut ingest = Ingest::new(cfg, &producer, &metrics, &shutdown, max_trades);
    let mut first = true;
    while !shutdown.is_triggered() {
        if !first {
            metrics.incr("reconnects");
        }
        first = false;
        let mut floor = Duration::ZERO;
        match connect(cfg, &url).await {
            Ok(ws) => {
                metrics.incr("connections");
                log::info!(
                    "connected to {shown_url}; subscribing {} symbols",
                    cfg.symbols.len()
                );
                let started = Instant::now();
                ingest.dedupe.clear();
                let ended = ingest.stream(ws).await;
                if started.elapsed() >= Duration::from_secs_f64(cfg.stable_after_s) {
                    backoff.reset();
                }
                if let Ended::Stop = ended {
                    break;
                }
            }
            Err(ConnectError::Unauthorized) => return Err(Error::Unauthorized),
            Err(ConnectError::RateLimited) => {
                metrics.incr("rate_limited");
                floor = Duration::from_secs_f64(cfg.rate_limited_backoff_s);
                log::warn!("{shown_url} answered 429 (too many connection attempts); waiting at least {floor:?}");
            }
            Err(ConnectError::Other(msg)) => {
                log::warn!("cannot connect to {shown_url}: {}", redact_url(&msg));
            }
        }
        let delay = backoff.next_delay().max(floor);
        log::info!(
            "reconnecting in {:.1}s (attempt {})",
            delay.as_secs_f64(),
            backoff.attempt()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => break,
        }
    }
    Ok(())
}

enum ConnectError {
    Unauthorized,
    RateLimited,
    Other(String),
}

async fn connect(cfg: &FinnhubConfig, url: &url::Url) -> std::result::Result<Ws, ConnectError> {
    let request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Other(e.to_string()))?;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(cfg.max_frame_bytes))
        .max_frame_size(Some(cfg.max_frame_bytes));
    let attempt = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Err(_) => Err(ConnectError::Other(
            "connection attempt timed out after 10s".into(),
        )),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => match resp.status().as_u16() {
            401 | 403 => Err(ConnectError::Unauthorized),
            429 => Err(ConnectError::RateLimited),
            code => Err(ConnectError::Other(format!("HTTP {code} at the upgrade"))),
        },
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cfg(url: &str, key: Option<&str>, n: usize) -> FinnhubConfig {
        FinnhubConfig {
            api_key: key.map(str::to_string),
            ws_url: url.into(),
            rest_url: "http://127.0.0.1:1/api/v1".into(),
            symbols: (0..n).map(|i| format!("S{i}")).collect(),
            max_symbols: 50,
            backoff_initial_s: 1.0,
            backoff_max_s: 60.0,
            stable_after_s: 60.0,
            silence_timeout_s: 150.0,
            rate_limited_backoff_s: 60.0,
            dedupe_window_ms: 2000,
            max_frame_bytes: 1 << 20,
            quotes_per_minute: 60,
        }
    }

    #[test]
    fn token_is_added_to_the_url() {
        let url = connection_url(&cfg("wss://ws.finnhub.io", Some("K"), 1)).unwrap();
        assert_eq!(url.as_str(), "wss://ws.finnhub.io/?token=K");
        assert!(matches!(
            connection_url(&cfg("wss://ws.finnhub.io", None, 1)),
            Err(Error::NoApiKey)
        ));
        assert!(connection_url(&cfg("ws://127.0.0.1:9/", None, 1)).is_ok());
    }

    #[test]
    fn more_symbols_than_the_plan_fails_before_connecting() {
        let err = validate(&cfg("ws://127.0.0.1:9/", None, 51)).unwrap_err();
        assert!(err.to_string().contains("51 symbols"), "{err}");
    }

    #[test]
    fn periods_that_would_panic_a_timer_fail_before_connecting() {
        assert!(validate(&cfg("ws://127.0.0.1:9/", None, 1)).is_ok());
        type Set = fn(&mut FinnhubConfig);
        let bad: [(&str, Set); 6] = [
            ("backoff_initial_s = -1", |c| c.backoff_initial_s = -1.0),
            ("backoff_max_s = 0.5", |c| c.backoff_max_s = 0.5),
            ("stable_after_s = NaN", |c| c.stable_after_s = f64::NAN),
            ("silence_timeout_s = inf", |c| {
                c.silence_timeout_s = f64::INFINITY
            }),
            ("silence_timeout_s = 0", |c| c.silence_timeout_s = 0.0),
            ("rate_limited_backoff_s = -2", |c| {
                c.rate_limited_backoff_s = -2.0
            }),
        ];
        for (expected, set) in bad {
            let mut c = cfg("ws://127.0.0.1:9/", None, 1);
            set(&mut c);
            let err = validate(&c).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
