//! Bindings for ingestion: the producer, the simulator, topic creation, frame parsing.

use super::errors::py_error;
use super::runtime::{
    export, parse_section as parse, rt, run_stage, seconds, shutdown_of, snapshot_dict, stop_after,
    wait_for, Progress, StopHandle,
};
use crate::config::{FinnhubConfig, KafkaConfig};
use crate::kafka::{ensure_topics as ensure, TradeProducer};
use crate::metrics::prometheus::PRODUCER;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::simulator::{SimConfig, Simulator};
use crate::source::{self, frame};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A stage's producer, made once the brokers answered and the topics exist: one made before
/// would log every failed connection to brokers that do not answer, before the one-line error.
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Option<Arc<TradeProducer>>>>);

impl Slot {
    fn fill(&self, producer: TradeProducer) -> Arc<TradeProducer> {
        let producer = Arc::new(producer);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(producer.clone());
        producer
    }

    /// Drops the producer with the GIL released and returns the records it still held.
    /// Dropping joins librdkafka's threads, and those log through Python's `logging` (taking the
    /// GIL): dropped while holding the GIL, a thread logging at that moment deadlocks the
    /// process. (Producers are made with the GIL released too: a failed creation tears its
    /// threads down.)
    fn release(&self, py: Python<'_>) -> i32 {
        let Some(producer) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return 0;
        };
        let unacked = producer.in_flight();
        py.detach(move || drop(producer));
        unacked
    }
}

/// Waits, until `shutdown`, for the producer's connections, partition leaders and producer id
/// ([`TradeProducer::warm_up`]) before the first record is read.
async fn warm_up(producer: &Arc<TradeProducer>, shutdown: &Shutdown) {
    let warm = producer.clone();
    let task = tokio::task::spawn_blocking(move || warm.warm_up(Duration::from_secs(10)));
    let _ = shutdown.or(task).await;
}

/// Checks the Finnhub settings that can be checked without connecting.
#[pyfunction]
pub fn validate_finnhub(finnhub_json: &str) -> PyResult<()> {
    let cfg: FinnhubConfig = parse("finnhub", finnhub_json)?;
    source::client::validate(&cfg)?;
    Ok(())
}

/// Runs WebSocket → Kafka until stopped; returns the counters.
#[pyfunction]
#[pyo3(signature = (finnhub_json, kafka_json, *, max_trades=None, duration_s=None, status=None, status_every_s=1.0, flush_timeout_s=4.0, stop=None, metrics_address=None))]
#[allow(clippy::too_many_arguments)]
pub fn run_producer<'py>(
    py: Python<'py>,
    finnhub_json: &str,
    kafka_json: &str,
    max_trades: Option<u64>,
    duration_s: Option<f64>,
    status: Option<Bound<'py, PyAny>>,
    status_every_s: f64,
    flush_timeout_s: f64,
    stop: Option<Bound<'py, StopHandle>>,
    metrics_address: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let fcfg: FinnhubConfig = parse("finnhub", finnhub_json)?;
    let kcfg: KafkaConfig = parse("kafka", kafka_json)?;
    source::client::validate(&fcfg)?;
    let mut names = source::client::COUNTERS.to_vec();
    names.extend_from_slice(crate::kafka::producer::COUNTERS);
    let metrics = Metrics::new(&names);
    let _exporter = export("producer", metrics_address, &PRODUCER, &metrics)?;
    let shutdown = shutdown_of(stop.as_ref());
    stop_after(&shutdown, duration_s)?;
    let flush = seconds("flush_timeout_s", flush_timeout_s)?;
    py.detach(|| TradeProducer::check(&kcfg))?;
    let slot = Slot::default();
    let fut = {
        let (slot, metrics, shutdown) = (slot.clone(), metrics.clone(), shutdown.clone());
        async move {
            let topics = vec![(kcfg.topic.clone(), 3), (kcfg.dlq_topic.clone(), 1)];
            ensure(&kcfg, &topics, Duration::from_secs(15), &shutdown).await?;
            metrics.set("kafka_ready", 1);
            let producer =
                slot.fill(TradeProducer::new(&kcfg, metrics.clone())?.stopping_on(&shutdown));
            warm_up(&producer, &shutdown).await;
            let result =
                source::run_ingest(&fcfg, producer.clone(), metrics, shutdown, max_trades).await;
            let flushed = tokio::task::spawn_blocking(move || producer.flush(flush)).await;
            result?;
            if let Ok(Err(e)) = flushed {
                log::warn!("flush did not complete: {e}");
            }
            Ok::<(), source::Error>(())
        }
    };
    let stats = run_stage(py, fut, &shutdown, &metrics, status, status_every_s);
    let unacked = slot.release(py);
    let stats = stats?;
    stats.set_item("unacked", unacked)?;
    Ok(stats)
}

/// Polls REST `/quote` snapshots into the quotes topic until stopped; returns the counters.
#[pyfunction]
#[pyo3(signature = (finnhub_json, kafka_json, *, max_quotes=None, duration_s=None, status=None, status_every_s=1.0, stop=None, metrics_address=None))]
#[allow(clippy::too_many_arguments)]
pub fn run_quotes<'py>(
    py: Python<'py>,
    finnhub_json: &str,
    kafka_json: &str,
    max_quotes: Option<u64>,
    duration_s: Option<f64>,
    status: Option<Bound<'py, PyAny>>,
    status_every_s: f64,
    stop: Option<Bound<'py, StopHandle>>,
    metrics_address: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let fcfg: FinnhubConfig = parse("finnhub", finnhub_json)?;
    let kcfg: KafkaConfig = parse("kafka", kafka_json)?;
    source::quotes::validate(&fcfg)?;
    let mut names = source::client::COUNTERS.to_vec();
    names.extend_from_slice(crate::kafka::producer::COUNTERS);
    names.extend_from_slice(source::quotes::COUNTERS);
    let metrics = Metrics::new(&names);
    let _exporter = export("producer", metrics_address, &PRODUCER, &metrics)?;
    let shutdown = shutdown_of(stop.as_ref());
    stop_after(&shutdown, duration_s)?;
    py.detach(|| TradeProducer::check(&kcfg))?;
    let slot = Slot::default();
    let fut = {
        let (slot, metrics, shutdown) = (slot.clone(), metrics.clone(), shutdown.clone());
        async move {
            let topics = vec![(kcfg.quotes_topic.clone(), 3), (kcfg.dlq_topic.clone(), 1)];
            ensure(&kcfg, &topics, Duration::from_secs(15), &shutdown).await?;
            metrics.set("kafka_ready", 1);
            let producer = slot.fill(
                TradeProducer::new(&kcfg, metrics.clone())?
                    .with_topic(&kcfg.quotes_topic)
                    .stopping_on(&shutdown),
            );
            warm_up(&producer, &shutdown).await;
            let result =
                source::quotes::run_quotes(&fcfg, producer.clone(), metrics, shutdown, max_quotes)
                    .await;
            let _ =
                tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(4))).await;
            result
        }
    };
    let stats = run_stage(py, fut, &shutdown, &metrics, status, status_every_s);
    let unacked = slot.release(py);
    let stats = stats?;
    stats.set_item("unacked", unacked)?;
    Ok(stats)
}

/// Serves the Finnhub protocol until stopped. `on_ready(address)` is called once listening.
#[pyfunction]
#[pyo3(signature = (sim_json, *, on_ready=None, status=None, status_every_s=1.0, stop=None))]
pub fn run_simulator<'py>(
    py: Python<'py>,
    sim_json: &str,
    on_ready: Option<Bound<'py, PyAny>>,
    status: Option<Bound<'py, PyAny>>,
    status_every_s: f64,
    stop: Option<Bound<'py, StopHandle>>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg: SimConfig = parse("simulate", sim_json)?;
    let shutdown = shutdown_of(stop.as_ref());
    let sim = py
        .detach(|| rt().block_on(Simulator::start(cfg, shutdown.clone())))
        .map_err(|e| py_error("IngestError", format!("simulator cannot start: {e}")))?;
    if let Some(cb) = on_ready {
        cb.call1((sim.local_addr.to_string(),))?;
    }
    let metrics = sim.metrics.clone();
    let progress = Progress::new(
        status,
        seconds("status_every_s", status_every_s)?,
        vec![metrics.clone()],
    );
    let (_, interrupted) = wait_for(py, sim.wait(), &shutdown, &progress)?;
    let stats = snapshot_dict(py, &[metrics])?;
    stats.set_item("interrupted", interrupted)?;
    Ok(stats)
}

/// Creates missing topics; returns each topic's real layout.
#[pyfunction]
#[pyo3(signature = (kafka_json, topics, timeout_s=15.0))]
pub fn ensure_topics<'py>(
    py: Python<'py>,
    kafka_json: &str,
    topics: Vec<(String, usize)>,
    timeout_s: f64,
) -> PyResult<Bound<'py, PyList>> {
    let kcfg: KafkaConfig = parse("kafka", kafka_json)?;
    let timeout = seconds("timeout_s", timeout_s)?;
    // Ctrl-C (or SIGTERM through the CLI) ends the wait for brokers that do not answer.
    let shutdown = Shutdown::new();
    let fut = {
        let shutdown = shutdown.clone();
        async move { ensure(&kcfg, &topics, timeout, &shutdown).await }
    };
    let progress = Progress::none();
    let (states, _) = wait_for(py, fut, &shutdown, &progress)?;
    let states = states?;
    let out = PyList::empty(py);
    for s in states {
        let d = PyDict::new(py);
        d.set_item("name", s.name)?;
        d.set_item("partitions", s.partitions)?;
        d.set_item("replication_factor", s.replication_factor)?;
        d.set_item("created", s.created)?;
        out.append(d)?;
    }
    Ok(out)
}

/// Classifies one frame as the ingest loop would: `(kind, records, rejections)`.
#[pyfunction]
pub fn parse_frame(text: &str) -> (String, Vec<String>, Vec<String>) {
    match frame::parse(text) {
        Ok(frame::Frame::Trades { trades, rejected }) => (
            "trade".into(),
            trades
                .iter()
                .map(|t| t.to_json(0, crate::record::Source::Finnhub))
                .collect(),
            rejected
                .iter()
                .map(|r| r.reason.as_str().to_string())
                .collect(),
        ),
        Ok(frame::Frame::Ping) => ("ping".into(), vec![], vec![]),
        Ok(frame::Frame::Error(m)) => ("error".into(), vec![m], vec![]),
        Ok(frame::Frame::Other { kind, .. }) => (kind.into(), vec![], vec![]),
        Err(r) => ("rejected".into(), vec![], vec![r.as_str().to_string()]),
    }
}

/// The live brokers of the cluster as `(id, host, port)`.
#[pyfunction]
#[pyo3(signature = (kafka_json, timeout_s=10.0))]
pub fn cluster_brokers(
    py: Python<'_>,
    kafka_json: &str,
    timeout_s: f64,
) -> PyResult<Vec<(i32, String, i32)>> {
    let kcfg: KafkaConfig = parse("kafka", kafka_json)?;
    let timeout = seconds("timeout_s", timeout_s)?;
    Ok(py.detach(|| crate::kafka::cluster_brokers(&kcfg, timeout))?)
}
