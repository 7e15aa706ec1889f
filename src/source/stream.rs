//! One connection's stream: subscribe every symbol, read frames under a silence watchdog,
//! answer pings, validate each frame and publish its trades (the invalid ones as dead letters).

use super::dedupe::Dedupe;
use super::frame::{self, Frame, Reject};
use crate::config::FinnhubConfig;
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::record::{now_ms, Source};
use crate::redact::redact_url;
use crate::shutdown::Shutdown;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a connection's stream ended.
pub(super) enum Ended {
    /// Shutdown, or `max_trades` published.
    Stop,
    Reconnect,
}

/// A run's state across its connections: where trades go, how many were published, and the
/// window of recent frames a reconnect may repeat.
pub(super) struct Ingest<'a> {
    pub cfg: &'a FinnhubConfig,
    pub producer: &'a TradeProducer,
    pub metrics: &'a Metrics,
    pub shutdown: &'a Shutdown,
    pub dedupe: Dedupe,
    pub max_trades: Option<u64>,
    pub published: u64,
    /// A trade's JSON, reused from one trade to the next.
    buf: String,
}

impl<'a> Ingest<'a> {
    pub fn new(
        cfg: &'a FinnhubConfig,
        producer: &'a TradeProducer,
        metrics: &'a Metrics,
        shutdown: &'a Shutdown,
        max_trades: Option<u64>,
    ) -> Self {
        Self {
            cfg,
            producer,
            metrics,
            shutdown,
            dedupe: Dedupe::new(Duration::from_millis(cfg.dedupe_window_ms)),
            max_trades,
            published: 0,
            buf: String::with_capacity(256),
        }
    }

    /// Streams one connection until it ends.
    pub async fn stream(&mut self, mut ws: Ws) -> Ended {
        for symbol in &self.cfg.symbols {
            let msg = serde_json::json!({"type": "subscribe", "symbol": symbol}).to_string();
            if let Err(e) = ws.send(Message::text(msg)).await {
                log::warn!("subscribe failed: {e}");
                return Ended::Reconnect;
            }
        }
        let silence = Duration::from_secs_f64(self.cfg.silence_timeout_s);
        loop {
            let message = match self.next_message(&mut ws, silence).await {
                Ok(message) => message,
                Err(ended) => return ended,
            };
            if let Some(ended) = self.on_message(&mut ws, message).await {
                return ended;
            }
        }
    }

    /// The next message, or how the connection ended: shutdown, silence, closed, lost.
    async fn next_message(
        &self,
        ws: &mut Ws,
        silence: Duration,
    ) -> std::result::Result<Message, Ended> {
        let next = tokio::select! {
            _ = self.shutdown.wait() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return Err(Ended::Stop);
            }
            next = tokio::time::timeout(silence, ws.next()) => next,
        };
        match next {
            Err(_) => {
                self.metrics.incr("silence_timeouts");
                log::warn!(
                    "no message for {silence:?}; the connection is presumed dead, reconnecting"
                );
                Err(Ended::Reconnect)
            }
            Ok(None) => {
                log::warn!("server closed the connection");
                Err(Ended::Reconnect)
            }
            Ok(Some(Err(tungstenite::Error::Capacity(e)))) => {
                self.metrics.incr("rejected");
                self.producer
                    .send_dead_letter(Reject::Oversized.as_str(), &e.to_string(), "ingest")
                    .await;
                log::warn!("oversized frame refused ({e}); reconnecting");
                Err(Ended::Reconnect)
            }
            Ok(Some(Err(e))) => {
                log::warn!("connection lost: {}", redact_url(&e.to_string()));
                Err(Ended::Reconnect)
            }
            Ok(Some(Ok(message))) => Ok(message),
        }
    }

    async fn on_message(&mut self, ws: &mut Ws, message: Message) -> Option<Ended> {
        let received = Instant::now();
        match message {
            Message::Text(text) => {
                let metrics = self.metrics;
                if metrics.get("first_frame_unix_us") == 0 {
                    metrics.set("first_frame_unix_us", crate::record::now_us());
                }
                metrics.incr("frames");
                metrics.add("bytes", text.len() as u64);
                if self.dedupe.is_duplicate(&text, received) {
                    metrics.incr("duplicates");
                } else if self.on_text(&text, received).await {
                    self.shutdown.trigger();
                }
            }
            Message::Binary(bytes) => {
                self.metrics.incr("frames");
                self.metrics.incr("rejected");
                self.producer
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
                return Some(Ended::Reconnect);
            }
            Message::Pong(_) | Message::Frame(_) => {}
        }
        None
    }

    /// Handles one text frame; returns true when `max_trades` has been reached.
    async fn on_text(&mut self, text: &str, received: Instant) -> bool {
        let (producer, metrics) = (self.producer, self.metrics);
        match frame::parse(text) {
            Ok(Frame::Trades { trades, rejected }) => {
                let received_ms = now_ms();
                for trade in &trades {
                    if self.max_trades.is_some_and(|m| self.published >= m) {
                        return true;
                    }
                    self.buf.clear();
                    trade.write_json(received_ms, Source::Finnhub, &mut self.buf);
                    if !producer
                        .send_trade(&trade.symbol, self.buf.as_bytes(), received)
                        .await
                    {
                        continue;
                    }
                    metrics.incr("trades");
                    self.published += 1;
                }
                for bad in rejected {
                    metrics.incr("rejected");
                    producer
                        .send_dead_letter(bad.reason.as_str(), bad.raw, "ingest")
                        .await;
                }
                self.max_trades.is_some_and(|m| self.published >= m)
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
}
