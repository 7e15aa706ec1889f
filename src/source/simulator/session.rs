//! One simulated WebSocket connection: subscriptions, trade generation, pings and faults.

use super::market::{trade_frame, GenTrade, MALFORMED};
use super::rest::{check_token, respond, Request};
use super::Shared;
use crate::record::now_ms;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// The names `[simulate] disconnect_kinds` accepts, each one a [`Fault`].
pub const DISCONNECT_KINDS: &[&str] = &["clean", "noclose", "no-close", "reset", "silent"];

/// How the simulator ends a connection when a disconnect is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A WebSocket close handshake.
    Clean,
    /// The TCP connection closes without a close frame.
    NoClose,
    /// The TCP connection is reset (RST).
    Reset,
    /// The connection stays open and goes quiet: no trades, no pings.
    Silent,
}

impl Fault {
    /// The cycle of faults named by `kinds`, or the first name that is not one of [`DISCONNECT_KINDS`].
    pub(crate) fn parse_all(kinds: &[String]) -> Result<Vec<Fault>, String> {
        kinds
            .iter()
            .map(|k| Fault::parse(k).ok_or_else(|| k.clone()))
            .collect()
    }

    fn parse(s: &str) -> Option<Fault> {
        match s {
            "clean" => Some(Fault::Clean),
            "noclose" | "no-close" => Some(Fault::NoClose),
            "reset" => Some(Fault::Reset),
            "silent" => Some(Fault::Silent),
            _ => None,
        }
    }
}

pub async fn run(mut stream: TcpStream, request: Request, shared: Arc<Shared>) {
    let refuse = shared
        .rejections_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refuse {
        let mut head = vec![0u8; request.head_len];
        let _ = stream.read_exact(&mut head).await;
        shared.metrics.incr("rejected_upgrades");
        let status = shared.cfg.reject_status;
        return respond(
            &mut stream,
            status,
            "Refused",
            r#"{"error":"Too many requests"}"#,
        )
        .await;
    }
    if let Err(body) = check_token(&shared.cfg.token, request.token()) {
        let mut head = vec![0u8; request.head_len];
        let _ = stream.read_exact(&mut head).await;
        shared.metrics.incr("unauthorized");
        return respond(&mut stream, 401, "Unauthorized", body).await;
    }
    let token = request.token().unwrap_or_default().to_string();
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (kill_tx, kill_rx) = watch::channel(false);
    if let Ok(mut live) = shared.live.lock() {
        if let Some(previous) = live.insert(token.clone(), kill_tx.clone()) {
            // One connection per key: the newcomer drops the old one, as Finnhub does.
            let _ = previous.send(true);
        }
    }
    shared.metrics.incr("connections");
    Session::new(shared.clone(), ws, kill_rx).run().await;
    if let Ok(mut live) = shared.live.lock() {
        if live.get(&token).is_some_and(|s| s.same_channel(&kill_tx)) {
            live.remove(&token);
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    ws: Ws,
    kill: watch::Receiver<bool>,
    subs: Vec<String>,
    carry: f64,
    replay_pos: usize,
}

enum Step {
    Continue,
    End,
}

impl Session {
    fn new(shared: Arc<Shared>, ws: Ws, kill: watch::Receiver<bool>) -> Self {
        Self {
            shared,
            ws,
            kill,
            subs: Vec::new(),
            carry: 0.0,
            replay_pos: 0,
        }
    }

    async fn run(mut self) {
        let cfg = self.shared.cfg.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ping_every = Duration::from_secs_f64(cfg.ping_interval_s.max(0.01));
        let mut next_ping = Instant::now() + ping_every;
        let mut next_fault = cfg
            .disconnect_every_s
            .map(|s| Instant::now() + Duration::from_secs_f64(s));
        let mut silent = false;
        let mut last = Instant::now();
        let shutdown = self.shared.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.wait() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
                    return;
                }
                _ = self.kill.changed() => return,
                incoming = self.ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Step::End = self.on_client_message(&text).await { return; }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let dt = now.duration_since(last).as_secs_f64();
                    last = now;
                    if silent {
                        continue;
                    }
                    if next_fault.is_some_and(|at| now >= at) {
                        next_fault = cfg.disconnect_every_s.map(|s| now + Duration::from_secs_f64(s));
                        match self.inject_disconnect().await {
                            Some(Fault::Silent) => { silent = true; continue; }
                            Some(_) => return,
                            None => {}
                        }
                    }
                    if now >= next_ping {
                        next_ping = now + ping_every;
                        if self.ws.feed(Message::text(r#"{"type":"ping"}"#)).await.is_err() { return; }
                    }
                    if let Step::End = self.emit(dt).await { return; }
                }
            }
        }
    }

    async fn on_client_message(&mut self, text: &str) -> Step {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Step::Continue;
        };
        let symbol = v["symbol"].as_str().unwrap_or_default().to_string();
        match v["type"].as_str() {
            Some("subscribe") => {
                let known =
                    self.shared.cfg.symbols.is_empty() || self.shared.cfg.symbols.contains(&symbol);
                let error = if self.subs.contains(&symbol) {
                    None
                } else if self.subs.len() >= self.shared.cfg.max_symbols {
                    Some("Subscribing to too many symbols".to_string())
                } else if !known || symbol.is_empty() {
                    Some(format!("Invalid symbol {symbol}"))
                } else {
                    self.subs.push(symbol);
                    None
                };
                if let Some(msg) = error {
                    let frame = serde_json::json!({"type": "error", "msg": msg}).to_string();
                    if self.ws.send(Message::text(frame)).await.is_err() {
                        return Step::End;
                    }
                }
            }
            Some("unsubscribe") => self.subs.retain(|s| *s != symbol),
            _ => {}
        }
        Step::Continue
    }

    /// Sends this tick's share of trades; ledger entries are written once the frames are flushed.
    async fn emit(&mut self, dt: f64) -> Step {
        if self.subs.is_empty() {
            return Step::Continue;
        }
        let cfg = &self.shared.cfg;
        self.carry += cfg.rate * dt.min(0.5);
        let want = self.carry.floor() as u64;
        self.carry -= want as f64;
        if self.shared.replay.is_some() {
            return self.emit_replay(want).await;
        }
        let granted = self.shared.take_budget(want) as usize;
        if granted == 0 {
            return Step::Continue;
        }
        let now = now_ms();
        let per_frame = cfg.trades_per_frame.max(1);
        let mut delivered: Vec<GenTrade> = Vec::with_capacity(granted);
        let mut frames = Vec::with_capacity(granted / per_frame + 1);
        let mut text = String::new();
        let (mut dups, mut bad) = (0, 0);
        {
            let Ok(mut market) = self.shared.market.lock() else {
                return Step::End;
            };
            let mut left = granted;
            while left > 0 {
                let n = left.min(per_frame);
                left -= n;
                let start = delivered.len();
                for _ in 0..n {
                    delivered.push(market.trade(&self.subs, now, cfg.out_of_order_rate));
                }
                trade_frame(&delivered[start..], &mut text);
                let copies = if market.chance(cfg.duplicate_rate) {
                    dups += 1;
                    if market.chance(0.5) {
                        3
                    } else {
                        2
                    }
                } else {
                    1
                };
                for _ in 0..copies {
                    frames.push(text.clone());
                }
                if market.chance(cfg.malformed_rate) {
                    bad += 1;
                    frames.push(market.pick(MALFORMED).to_string());
                }
            }
        }
        let count = frames.len();
        for frame in frames {
            if self.ws.feed(Message::text(frame)).await.is_err() {
                return Step::End;
            }
        }
        if self.ws.flush().await.is_err() {
            return Step::End;
        }
        let m = &self.shared.metrics;
        m.add("frames_sent", count as u64);
        m.add("trades_sent", delivered.len() as u64);
        m.add("duplicates_sent", dups);
        m.add("malformed_sent", bad);
        if let Some(ledger) = &self.shared.ledger {
            ledger.record(&delivered);
        }
        Step::Continue
    }

    async fn emit_replay(&mut self, frames: u64) -> Step {
        let Some(lines) = self.shared.replay.clone() else {
            return Step::Continue;
        };
        let mut delivered = Vec::new();
        for _ in 0..frames {
            let Some(line) = lines.get(self.replay_pos) else {
                break;
            };
            self.replay_pos += 1;
            if let Ok(crate::source::frame::Frame::Trades { trades, .. }) =
                crate::source::frame::parse(line)
            {
                delivered.extend(trades.into_iter().map(|t| GenTrade {
                    symbol: t.symbol.into_owned(),
                    price: t.price.to_string(),
                    volume: t.volume.unwrap_or("null").to_string(),
                    ts: t.trade_ts,
                    conditions: None,
                }));
            }
            if self.ws.feed(Message::text(line.clone())).await.is_err() {
                return Step::End;
            }
        }
        if self.ws.flush().await.is_err() {
            return Step::End;
        }
        self.shared
            .metrics
            .add("trades_sent", delivered.len() as u64);
        if let Some(ledger) = &self.shared.ledger {
            ledger.record(&delivered);
        }
        Step::Continue
    }

    /// Performs the next disconnect kind of the cycle.
    async fn inject_disconnect(&mut self) -> Option<Fault> {
        let kinds = &self.shared.faults;
        if kinds.is_empty() {
            return None;
        }
        let n = self.shared.disconnect_cycle.fetch_add(1, Ordering::SeqCst) as usize;
        let fault = kinds[n % kinds.len()];
        self.shared.metrics.incr("disconnects");
        log::info!("simulator: injecting {fault:?} disconnect");
        let _ = self.ws.flush().await;
        match fault {
            Fault::Clean => {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
            }
            Fault::NoClose => {}
            Fault::Reset => {
                // Let the client drain what was already sent, then abort with RST.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = socket2::SockRef::from(self.ws.get_ref()).set_linger(Some(Duration::ZERO));
            }
            Fault::Silent => {}
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kind_is_a_fault_and_nothing_else_is() {
        let listed: Vec<String> = DISCONNECT_KINDS.iter().map(|k| k.to_string()).collect();
        let faults = Fault::parse_all(&listed).expect("every listed kind parses");
        for fault in [Fault::Clean, Fault::NoClose, Fault::Reset, Fault::Silent] {
            assert!(
                faults.contains(&fault),
                "{fault:?} has no name in DISCONNECT_KINDS"
            );
        }
        for name in ["sudden", "Clean", "no_close", ""] {
            assert_eq!(Fault::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn an_unknown_kind_is_named_not_dropped() {
        let kinds = vec![
            "clean".to_string(),
            "sudden".to_string(),
            "reset".to_string(),
        ];
        assert_eq!(Fault::parse_all(&kinds), Err("sudden".to_string()));
    }
}
