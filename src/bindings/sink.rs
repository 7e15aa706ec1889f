//! Bindings for the Kafka → object storage sink.

use super::errors::{config_error, py_error};
use super::runtime::{
    export, parse_section as parse, rt, run_stage, shutdown_of, stop_after, StopHandle,
};
use crate::config::{KafkaConfig, S3Config, SinkConfig};
use crate::metrics::prometheus::SINK;
use crate::metrics::Metrics;
use pyo3::prelude::*;
use pyo3::types::PyDict;

impl From<crate::sink::Error> for PyErr {
    fn from(e: crate::sink::Error) -> Self {
        match e {
            crate::sink::Error::Kafka(k) => k.into(),
            crate::sink::Error::Store(crate::store::Error::BadUri(u)) => config_error(format!(
                "[sink] output = {u:?}: expected s3://bucket/prefix or file:///path"
            )),
            other => py_error("SinkError", other.to_string()),
        }
    }
}

/// Runs Kafka → JSONL objects until stopped; returns the counters.
#[pyfunction]
#[pyo3(signature = (kafka_json, sink_json, s3_json, *, duration_s=None, status=None, status_every_s=1.0, stop=None, metrics_address=None))]
#[allow(clippy::too_many_arguments)]
pub fn run_sink<'py>(
    py: Python<'py>,
    kafka_json: &str,
    sink_json: &str,
    s3_json: &str,
    duration_s: Option<f64>,
    status: Option<Bound<'py, PyAny>>,
    status_every_s: f64,
    stop: Option<Bound<'py, StopHandle>>,
    metrics_address: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let kcfg: KafkaConfig = parse("kafka", kafka_json)?;
    let scfg: SinkConfig = parse("sink", sink_json)?;
    let s3cfg: S3Config = parse("s3", s3_json)?;
    let metrics = Metrics::new(crate::sink::COUNTERS);
    let _exporter = export("sink", metrics_address, &SINK, &metrics)?;
    let shutdown = shutdown_of(stop.as_ref());
    stop_after(&shutdown, duration_s)?;
    let fut = {
        let (metrics, shutdown, handle) =
            (metrics.clone(), shutdown.clone(), rt().handle().clone());
        async move {
            tokio::task::spawn_blocking(move || {
                crate::sink::run_sink(&kcfg, &scfg, &s3cfg, metrics, shutdown, handle)
            })
            .await
            .map_err(|e| crate::sink::Error::Other(format!("sink thread failed: {e}")))?
        }
    };
    run_stage(py, fut, &shutdown, &metrics, status, status_every_s)
}
