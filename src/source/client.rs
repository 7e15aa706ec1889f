//! The Finnhub WebSocket client: one connection per key, every symbol subscribed on every
//! connection, every frame validated, reconnects with backoff, a silence watchdog.

use super::backoff::Backoff;
use super::dedupe::Dedupe;
use super::frame::{self, Frame, Reject};
use super::{Error, Result};
use crate::config::FinnhubConfig;
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::record::{now_ms, Source};
use crate::redact::redact_url;
use crate::shutdown::Shutdown;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

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

enum Ended {
    Stop,
    Reconnect,
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
    let mut dedupe = Dedupe::new(Duration::from_millis(cfg.dedupe_window_ms));
    let mut published: u64 = 0;
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
                dedupe.clear();
                let ended = stream(
                    cfg,
                    ws,
                    &producer,
                    &metrics,
                    &shutdown,
                    &mut dedupe,
                    &mut published,
                    max_trades,
                )
                .await?;
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

#[allow(clippy::too_many_arguments)]
async fn stream(
    cfg: &FinnhubConfig,
    mut ws: Ws,
    producer: &TradeProducer,
    metrics: &Metrics,
    shutdown: &Shutdown,
    dedupe: &mut Dedupe,
    published: &mut u64,
    max_trades: Option<u64>,
) -> Result<Ended> {
    for symbol in &cfg.symbols {
        let msg = serde_json::json!({"type": "subscribe", "symbol": symbol}).to_string();
        if let Err(e) = ws.send(Message::text(msg)).await {
            log::warn!("subscribe failed: {e}");
            return Ok(Ended::Reconnect);
        }
    }
    let silence = Duration::from_secs_f64(cfg.silence_timeout_s);
    let mut buf = String::with_capacity(256);
    loop {
        let next = tokio::select! {
            _ = shutdown.wait() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return Ok(Ended::Stop);
            }
            next = tokio::time::timeout(silence, ws.next()) => next,
        };
        let message = match next {
            Err(_) => {
                metrics.incr("silence_timeouts");
                log::warn!(
                    "no message for {silence:?}; the connection is presumed dead, reconnecting"
                );
                return Ok(Ended::Reconnect);
            }
            Ok(None) => {
                log::warn!("server closed the connection");
                return Ok(Ended::Reconnect);
            }
            Ok(Some(Err(tungstenite::Error::Capacity(e)))) => {
                metrics.incr("rejected");
                producer
                    .send_dead_letter(Reject::Oversized.as_str(), &e.to_string(), "ingest")
                    .await;
                log::warn!("oversized frame refused ({e}); reconnecting");
                return Ok(Ended::Reconnect);
            }
            Ok(Some(Err(e))) => {
                log::warn!("connection lost: {}", redact_url(&e.to_string()));
                return Ok(Ended::Reconnect);
            }
            Ok(Some(Ok(m))) => m,
        };
        let received = Instant::now();
        match message {
            Message::Text(text) => {
                if metrics.get("first_frame_unix_us") == 0 {
                    metrics.set("first_frame_unix_us", crate::record::now_us());
                }
                metrics.incr("frames");
                metrics.add("bytes", text.len() as u64);
                if dedupe.is_duplicate(&text, received) {
                    metrics.incr("duplicates");
                    continue;
                }
                let done = handle_text(
                    &text, received, producer, metrics, &mut buf, published, max_trades,
                )
                .await;
                if done {
                    shutdown.trigger();
                }
            }
            Message::Binary(bytes) => {
                metrics.incr("frames");
                metrics.incr("rejected");
                producer
                    .send_dead_letter(
                        Reject::BinaryFrame.as_str(),
                        &String::from_utf8_lossy(&bytes),
                        "ingest",
                    )
                    .await;
            }
            Message::Ping(_) => {
                // tungstenite queued the pong; push it out now rather than on the next write.
                let _ = ws.flush().await;
            }
            Message::Close(frame) => {
                log::warn!("server sent close: {frame:?}");
                return Ok(Ended::Reconnect);
            }
            Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// Handles one text frame; returns true when `max_trades` has been reached.
async fn handle_text(
    text: &str,
    received: Instant,
    producer: &TradeProducer,
    metrics: &Metrics,
    buf: &mut String,
    published: &mut u64,
    max_trades: Option<u64>,
) -> bool {
    match frame::parse(text) {
        Ok(Frame::Trades { trades, rejected }) => {
            let received_ms = now_ms();
            for trade in &trades {
                if max_trades.is_some_and(|m| *published >= m) {
                    return true;
                }
                buf.clear();
                trade.write_json(received_ms, Source::Finnhub, buf);
                if !producer
                    .send_trade(&trade.symbol, buf.as_bytes(), received)
                    .await
                {
                    continue;
                }
                metrics.incr("trades");
                *published += 1;
            }
            for bad in rejected {
                metrics.incr("rejected");
                producer
                    .send_dead_letter(bad.reason.as_str(), bad.raw, "ingest")
                    .await;
            }
            max_trades.is_some_and(|m| *published >= m)
        }
        Ok(Frame::Ping) => {
            metrics.incr("pings");
            false
        }
        Ok(Frame::Error(msg)) => {
            metrics.incr("server_errors");
            log::warn!("finnhub error: {msg}");
            false
        }
        Ok(Frame::Other { .. }) => {
            metrics.incr("other_messages");
            false
        }
        Err(reason) => {
            metrics.incr("rejected");
            producer
                .send_dead_letter(reason.as_str(), text, "ingest")
                .await;
            false
        }
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
