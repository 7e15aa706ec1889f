//! Bindings for the raw JSONL → Parquet engine.

use super::errors::{config_error, py_error};
use super::runtime::{parse_section as parse, run_stage};
use crate::config::{S3Config, TransformConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::transform::engine::parse_day;
use crate::transform::{rules, Selection};
use pyo3::prelude::*;
use pyo3::types::PyDict;

impl From<crate::transform::Error> for PyErr {
    fn from(e: crate::transform::Error) -> Self {
        use crate::transform::Error;
        match e {
            Error::Store(crate::store::Error::BadUri(u)) => config_error(format!(
                "[transform] {u:?}: expected s3://bucket/prefix or file:///path"
            )),
            Error::Config(m) => config_error(m),
            other => py_error("TransformError", other.to_string()),
        }
    }
}

/// The rule set compiled into the engine, as JSON (compare with `stockpipe.rules.SPEC`).
#[pyfunction]
pub fn transform_rules() -> String {
    rules::spec().to_string()
}

/// Refuses to run when the Python rule set and the compiled one differ, naming the keys.
fn check_rules(rules_json: &str) -> PyResult<()> {
    let python: serde_json::Value = serde_json::from_str(rules_json)
        .map_err(|e| py_error("TransformError", format!("rule set is not JSON: {e}")))?;
    let engine = rules::spec();
    if python == engine {
        return Ok(());
    }
    let (p, e) = (python.as_object(), engine.as_object());
    let mut keys: Vec<&String> = p.into_iter().chain(e).flat_map(|m| m.keys()).collect();
    keys.sort();
    keys.dedup();
    let differ: Vec<&str> = keys
        .into_iter()
        .filter(|k| python.get(k.as_str()) != engine.get(k.as_str()))
        .map(String::as_str)
        .collect();
    Err(py_error(
        "TransformError",
        format!(
            "the rule set in stockpipe/rules.py and the one compiled into the engine differ in: {}; \
             rebuild the extension (maturin develop) so both engines apply the same rules",
            differ.join(", ")
        ),
    ))
}

fn day_arg(flag: &str, v: Option<&str>) -> PyResult<Option<crate::sink::encode::Day>> {
    v.map(|s| {
        parse_day(s)
            .ok_or_else(|| config_error(format!("{flag} {s:?}: expected a date as YYYY-MM-DD")))
    })
    .transpose()
}

/// Builds `processed.data/` from `raw.data/` for the selected days; returns the counters.
#[pyfunction]
#[pyo3(signature = (transform_json, s3_json, rules_json, *, date=None, since=None, full=false, status=None, status_every_s=1.0))]
#[allow(clippy::too_many_arguments)]
pub fn run_transform<'py>(
    py: Python<'py>,
    transform_json: &str,
    s3_json: &str,
    rules_json: &str,
    date: Option<&str>,
    since: Option<&str>,
    full: bool,
    status: Option<Bound<'py, PyAny>>,
    status_every_s: f64,
) -> PyResult<Bound<'py, PyDict>> {
    check_rules(rules_json)?;
    let cfg: TransformConfig = parse("transform", transform_json)?;
    let s3cfg: S3Config = parse("s3", s3_json)?;
    let selection = Selection {
        date: day_arg("--date", date)?,
        since: day_arg("--since", since)?,
        full,
    };
    let metrics = Metrics::new(crate::transform::COUNTERS);
    let shutdown = Shutdown::new();
    let fut = {
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        async move { crate::transform::run_transform(&cfg, &s3cfg, &selection, metrics, shutdown).await }
    };
    run_stage(py, fut, &shutdown, &metrics, status, status_every_s)
}
