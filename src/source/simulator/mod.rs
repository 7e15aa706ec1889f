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

impl Simulator {
    /// Binds and starts serving in the background.
    pub async fn start(cfg: SimConfig, shutdown: Shutdown) -> std::io::Result<Self> {
        let listener = TcpListener::bind((cfg.host.as_str(), cfg.port)).await?;
        let local_addr = listener.local_addr()?;
        let ledger = cfg.ledger.as_deref().map(Ledger::create).transpose()?;
        let replay = match &cfg.replay {
            Some(path) => Some(
                std::fs::read_to_string(path)?
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
