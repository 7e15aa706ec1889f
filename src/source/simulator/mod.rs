//! A local server that speaks the Finnhub protocol: the WebSocket trade stream (token check,
//! subscriptions, the symbol cap, pings, mixed trade batches) and the REST `/quote` and
//! `/stock/market-status` endpoints with their rate limits, plus switchable fault injection and
//! a ledger of every trade actually delivered.

pub mod ledger;
pub mod market;
mod rest;
mod session;

pub use session::DISCONNECT_KINDS;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use ledger::Ledger;
use market::Market;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Counter names the simulator maintains.
pub const COUNTERS: &[&str] = &[
    "connections",
    "trades_sent",
    "frames_sent",
    "duplicates_sent",
    "malformed_sent",
    "disconnects",
    "rejected_upgrades",
    "unauthorized",
    "rest_requests",
    "rest_rate_limited",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub host: String,
    pub port: u16,
    /// Symbols the market knows; others get `Invalid symbol` (empty: every symbol is known).
    pub symbols: Vec<String>,
    /// Trades per second per connection.
    pub rate: f64,
    #[serde(default)]
    pub token: Option<String>,
    pub max_symbols: usize,
    pub ping_interval_s: f64,
    pub trades_per_frame: usize,
    #[serde(default)]
    pub ledger: Option<String>,
    #[serde(default)]
    pub replay: Option<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Stop generating after this many trades in total (then only pings).
    #[serde(default)]
    pub max_trades: Option<u64>,
    pub seed: u64,
    #[serde(default)]
    pub disconnect_every_s: Option<f64>,
    /// Cycle of disconnect kinds, each one of [`DISCONNECT_KINDS`].
    pub disconnect_kinds: Vec<String>,
    pub duplicate_rate: f64,
    pub out_of_order_rate: f64,
    pub malformed_rate: f64,
    /// The first N upgrade attempts are answered with `reject_status` (e.g. 429).
    pub reject_upgrades: u32,
    pub reject_status: u16,
    pub rest_per_minute: u32,
    pub rest_per_second: u32,
}

/// State shared by every connection of one simulator.
pub(crate) struct Shared {
    cfg: SimConfig,
    market: Mutex<Market>,
    ledger: Option<Ledger>,
    metrics: Arc<Metrics>,
    generated: AtomicU64,
    rejections_left: AtomicU32,
    disconnect_cycle: AtomicU64,
    /// `cfg.disconnect_kinds`, parsed.
    faults: Vec<session::Fault>,
    /// Per token, a kill switch for the live connection (a second connection drops the first).
    live: Mutex<HashMap<String, watch::Sender<bool>>>,
    rest: rest::RateLimiter,
    replay: Option<Vec<String>>,
    shutdown: Shutdown,
}

impl Shared {
    /// Reserves up to `want` trades from the `max_trades` budget.
    fn take_budget(&self, want: u64) -> u64 {
        let Some(max) = self.cfg.max_trades else {
            self.generated.fetch_add(want, Ordering::Relaxed);
            return want;
        };
        let mut granted = 0;
        let _ = self
            .generated
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                granted = want.min(max.saturating_sub(cur));
                Some(cur + granted)
            });
        granted
    }
}

/// A running simulator: its address, counters and a handle to stop it.
pub struct Simulator {
    pub local_addr: std::net::SocketAddr,
    pub metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl SimConfig {
    /// Refuses times and rates no clock can wait for (negative, zero where a period is meant, not
    /// finite): the Python configuration checks them too, but a config built by hand reaches here.
    pub fn check(&self) -> Result<(), String> {
        let periods = [
            ("rate", Some(self.rate)),
            ("ping_interval_s", Some(self.ping_interval_s)),
            ("disconnect_every_s", self.disconnect_every_s),
        ];
        for (key, value) in periods {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(format!("{key} = {v}: must be greater than zero"));
            }
        }
        if let Some(v) = self.duration_s.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(format!("duration_s = {v}: must not be negative"));
        }
        Ok(())
    }
}

impl Simulator {
    /// Binds and starts serving in the background.
    pub async fn start(cfg: SimConfig, shutdown: Shutdown) -> std::io::Result<Self> {
        cfg.check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // Each failure names what it concerns: the address, the ledger or the replayed file.
        let about = |what: String| {
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
            .await
            .map_err(about(format!("cannot listen on {}:{}", cfg.host, cfg.port)))?;
        let local_addr = listener.local_addr()?;
        let ledger = match cfg.ledger.as_deref() {
            Some(path) => Some(Ledger::create(path).map_err(about(format!("ledger {path}")))?),
            None => None,
        };
        let replay = match &cfg.replay {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(about(format!("replay {path}")))?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            None => None,
        };
        let faults = session::Fault::parse_all(&cfg.disconnect_kinds).map_err(|kind| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "unknown disconnect kind {kind:?}, expected some of {}",
                    DISCONNECT_KINDS.join(", ")
                ),
            )
        })?;
        let metrics = Metrics::new(COUNTERS);
        let shared = Arc::new(Shared {
            market: Mutex::new(Market::new(cfg.seed)),
            ledger,
            metrics: metrics.clone(),
            generated: AtomicU64::new(0),
            rejections_left: AtomicU32::new(cfg.reject_upgrades),
            disconnect_cycle: AtomicU64::new(0),
            faults,
            live: Mutex::new(HashMap::new()),
            rest: rest::RateLimiter::new(cfg.rest_per_minute, cfg.rest_per_second),
            replay,
            shutdown: shutdown.clone(),
            cfg,
        });
        if let Some(secs) = shared.cfg.duration_s {
            let s = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                s.trigger();
            });
        }
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = accept_shared.shutdown.wait() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve(stream, accept_shared.clone()));
                    }
                }
            }
        });
        Ok(Self {
            local_addr,
            metrics,
            shared,
            task,
        })
    }

    /// Waits until the simulator stops (shutdown or duration), then flushes the ledger.
    pub async fn wait(self) {
        let _ = self.task.await;
        // Give sessions a moment to close their sockets cleanly.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(l) = &self.shared.ledger {
            l.flush();
        }
    }
}

/// Routes one TCP connection: a WebSocket upgrade or a plain REST request.
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 8192];
    let head = loop {
        let n = match tokio::time::timeout(Duration::from_secs(5), stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..end]).into_owned();
        }
        if n == buf.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let request = rest::Request::parse(&head);
    if request
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    {
        session::run(stream, request, shared).await;
    } else {
        rest::serve(stream, request, &shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(overrides: serde_json::Value) -> SimConfig {
        let mut base = serde_json::json!({
            "host": "127.0.0.1", "port": 0, "symbols": [], "rate": 100.0, "max_symbols": 50,
            "ping_interval_s": 20.0, "trades_per_frame": 20, "seed": 1, "disconnect_kinds": [],
            "duplicate_rate": 0.0, "out_of_order_rate": 0.0, "malformed_rate": 0.0,
            "reject_upgrades": 0, "reject_status": 429, "rest_per_minute": 60, "rest_per_second": 30,
        });
        base.as_object_mut()
            .unwrap()
            .extend(overrides.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn times_no_clock_can_wait_for_are_refused_at_start() {
        assert_eq!(config(serde_json::json!({})).check(), Ok(()));
        assert_eq!(
            config(serde_json::json!({"duration_s": 0.0})).check(),
            Ok(())
        );
        for (overrides, message) in [
            (
                serde_json::json!({"duration_s": -1.0}),
                "duration_s = -1: must not be negative",
            ),
            (
                serde_json::json!({"rate": 0.0}),
                "rate = 0: must be greater than zero",
            ),
            (
                serde_json::json!({"ping_interval_s": -2.0}),
                "ping_interval_s = -2: must be",
            ),
            (
                serde_json::json!({"disconnect_every_s": 0.0}),
                "disconnect_every_s = 0: must be",
            ),
        ] {
            let err = config(overrides.clone()).check().unwrap_err();
            assert!(err.starts_with(message), "{overrides}: {err}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = rt.block_on(Simulator::start(
            config(serde_json::json!({"duration_s": -1.0})),
            Shutdown::new(),
        ));
        assert_eq!(
            started.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput)
        );
    }
}
