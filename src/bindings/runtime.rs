//! One lazily built tokio runtime per process (rebuilt after `fork`, which Spark and Glue do),
//! and the single helper through which every blocking call waits: GIL released, Ctrl-C and
//! SIGTERM honoured about every 100 ms by asking the stage to stop and finish cleanly.

use crate::metrics::prometheus::{Exporter, Stage};
use crate::metrics::{LatencyHistogram, Metrics};
use crate::shutdown::Shutdown;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The process's runtime, built on first use and again in a forked child.
pub fn rt() -> Arc<Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return rt.clone();
        }
        // Inherited from the parent across fork: its threads do not exist here. Leak it, since
        // dropping would try to join threads that are gone.
        if let Some((_, old)) = slot.take() {
            std::mem::forget(old);
        }
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
            .thread_name("stockpipe")
            .enable_all()
            .build()
            .expect("failed to build the tokio runtime"),
    );
    *slot = Some((pid, rt.clone()));
    rt
}

/// The pid that built the current runtime (tests use it to prove the rebuild after fork).
#[pyfunction]
pub fn runtime_pid() -> u32 {
    let _ = rt();
    RUNTIME
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|(p, _)| *p))
        .unwrap_or(0)
}

/// A run's stop, from any thread: `stop()` asks the run it is passed to (the next one, when
/// called before that starts) to finish as on Ctrl-C, flushing what it holds.
#[pyclass(module = "stockpipe._native", frozen)]
pub struct StopHandle(Shutdown);

#[pymethods]
impl StopHandle {
    #[new]
    fn new() -> Self {
        StopHandle(Shutdown::new())
    }

    /// Asks the run to stop; returns at once.
    fn stop(&self) {
        self.0.trigger();
    }

    /// Whether `stop()` was called.
    #[getter]
    fn stopped(&self) -> bool {
        self.0.is_triggered()
    }
}

/// The stop of one run: the caller's handle, or a fresh one.
pub fn shutdown_of(stop: Option<&Bound<'_, StopHandle>>) -> Shutdown {
    stop.map_or_else(Shutdown::new, |s| s.get().0.clone())
}

/// Periodic progress reports: a Python callable given a dict of counters.
pub struct Progress<'py> {
    callback: Option<Bound<'py, PyAny>>,
    every: Duration,
    metrics: Vec<Arc<Metrics>>,
    /// Each set's latency bucket counts at the previous report.
    seen: RefCell<Vec<Vec<u64>>>,
}

impl<'py> Progress<'py> {
    pub fn new(
        callback: Option<Bound<'py, PyAny>>,
        every: Duration,
        metrics: Vec<Arc<Metrics>>,
    ) -> Self {
        let seen = metrics.iter().map(|m| m.latency().counts()).collect();
        Self {
            callback,
            every,
            metrics,
            seen: RefCell::new(seen),
        }
    }

    /// No reports.
    pub fn none() -> Self {
        Self::new(None, Duration::MAX, Vec::new())
    }

    /// Calls back with the run's counters, plus `latency_p99_interval_ms`: the p99 of the
    /// latencies recorded since the previous report (absent when there were none), which the
    /// status line shows, as the run's own p99 stays high for a long time after a slow start.
    fn report(&self, py: Python<'_>) -> PyResult<()> {
        let Some(cb) = &self.callback else {
            return Ok(());
        };
        let stats = snapshot_dict(py, &self.metrics)?;
        let mut since: Vec<u64> = Vec::new();
        for (m, last) in self.metrics.iter().zip(self.seen.borrow_mut().iter_mut()) {
            let now = m.latency().counts();
            since.resize(now.len(), 0);
            for ((s, n), l) in since.iter_mut().zip(&now).zip(last.iter()) {
                *s += n.saturating_sub(*l);
            }
            *last = now;
        }
        if since.iter().any(|n| *n > 0) {
            let p99 = LatencyHistogram::quantile_of(&since, 0.99) as f64 / 1e3;
            stats.set_item("latency_p99_interval_ms", p99)?;
        }
        cb.call1((stats,))?;
        Ok(())
    }
}

pub fn snapshot_dict<'py>(
    py: Python<'py>,
    metrics: &[Arc<Metrics>],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for m in metrics {
        for (k, v) in m.snapshot().values {
            d.set_item(k, v)?;
        }
    }
    Ok(d)
}

/// Runs `fut` to completion on the runtime with the GIL released. A signal (Ctrl-C, or SIGTERM
/// where the CLI maps it to KeyboardInterrupt) triggers `shutdown` so the stage can flush; the
/// call then still returns the stage's own result.
pub fn wait_for<F, T>(
    py: Python<'_>,
    fut: F,
    shutdown: &Shutdown,
    progress: &Progress<'_>,
) -> PyResult<(T, bool)>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let runtime = rt();
    let mut handle = runtime.spawn(fut);
    let mut interrupted = false;
    let mut last_report = Instant::now();
    loop {
        let polled = py.detach(|| {
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_millis(100), &mut handle).await
            })
        });
        match polled {
            Ok(Ok(value)) => return Ok((value, interrupted)),
            Ok(Err(join)) => {
                return Err(super::errors::py_error(
                    "StockpipeError",
                    format!("stage crashed: {join}"),
                ))
            }
            Err(_) => {}
        }
        if let Err(e) = py.check_signals() {
            if interrupted {
                // A second interrupt: stop waiting for the graceful path.
                handle.abort();
                return Err(e);
            }
            interrupted = true;
            // Said at the default log level: a stage may take seconds to flush or finish a day.
            log::warn!(
                "interrupted: finishing what is in progress (interrupt again to stop without waiting)"
            );
            shutdown.trigger();
        }
        if progress.callback.is_some() && last_report.elapsed() >= progress.every {
            last_report = Instant::now();
            progress.report(py)?;
        }
    }
}

/// Parses one config section handed over as JSON by the Python layer.
pub fn parse_section<T: serde::de::DeserializeOwned>(section: &str, json: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| super::errors::config_error(format!("[{section}] {e}")))
}

/// `value` seconds as a duration, or a `ConfigError` naming `what` (negative, NaN, infinite).
pub fn seconds(what: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        super::errors::config_error(format!(
            "{what} = {value}: expected a finite, non-negative number of seconds"
        ))
    })
}

/// Triggers `shutdown` after `seconds`, when given.
pub fn stop_after(shutdown: &Shutdown, seconds: Option<f64>) -> PyResult<()> {
    if let Some(s) = seconds {
        let s = self::seconds("duration_s", s)?;
        let shutdown = shutdown.clone();
        rt().spawn(async move {
            tokio::time::sleep(s).await;
            shutdown.trigger();
        });
    }
    Ok(())
}

/// Serves the run's counters to Prometheus on `address` (`[section] metrics_address`; empty: not
/// at all) for as long as the returned guard lives.
pub fn export(
    section: &str,
    address: Option<&str>,
    stage: &'static Stage,
    metrics: &Arc<Metrics>,
) -> PyResult<Option<Exporter>> {
    let Some(address) = address.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let exporter =
        Exporter::start(address, stage, metrics.clone(), rt().handle()).map_err(|e| {
            super::errors::config_error(format!(
                "[{section}] metrics_address = {address:?}: cannot listen there: {e}"
            ))
        })?;
    log::info!(
        "metrics for Prometheus on http://{}/metrics",
        exporter.address()
    );
    Ok(Some(exporter))
}

/// Runs one stage to completion (see [`wait_for`]) and returns its counters as a dict, with
/// `interrupted` telling whether a signal stopped it.
pub fn run_stage<'py, F, E>(
    py: Python<'py>,
    fut: F,
    shutdown: &Shutdown,
    metrics: &Arc<Metrics>,
    status: Option<Bound<'py, PyAny>>,
    status_every_s: f64,
) -> PyResult<Bound<'py, PyDict>>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<PyErr> + Send + 'static,
{
    if shutdown.is_triggered() {
        // Stopped before it began (`StopHandle.stop()` ahead of the run): nothing to do, and no
        // wait for the brokers cut short to report as an error.
        let stats = snapshot_dict(py, std::slice::from_ref(metrics))?;
        stats.set_item("interrupted", false)?;
        return Ok(stats);
    }
    let progress = Progress::new(
        status,
        seconds("status_every_s", status_every_s)?,
        vec![metrics.clone()],
    );
    let (result, interrupted) = wait_for(py, fut, shutdown, &progress)?;
    result.map_err(Into::into)?;
    let stats = snapshot_dict(py, std::slice::from_ref(metrics))?;
    stats.set_item("interrupted", interrupted)?;
    Ok(stats)
}
