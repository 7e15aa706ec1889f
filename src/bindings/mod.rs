//! The PyO3 module `stockpipe._native`: a thin layer that converts arguments, runs the Rust
//! stages on the shared runtime with the GIL released, and converts errors once.

mod errors;
mod runtime;
mod sink;
mod source;
mod transform;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust `log` records go to Python `logging` (librdkafka's arrive under `librdkafka`).
    let _ = pyo3_log::try_init();
    m.add("__version__", crate::VERSION)?;
    let kinds = pyo3::types::PyTuple::new(m.py(), crate::source::simulator::DISCONNECT_KINDS)?;
    m.add("DISCONNECT_KINDS", kinds)?;
    m.add_class::<runtime::StopHandle>()?;
    m.add_function(wrap_pyfunction!(source::run_producer, m)?)?;
    m.add_function(wrap_pyfunction!(source::run_simulator, m)?)?;
    m.add_function(wrap_pyfunction!(source::run_quotes, m)?)?;
    m.add_function(wrap_pyfunction!(source::ensure_topics, m)?)?;
    m.add_function(wrap_pyfunction!(source::cluster_brokers, m)?)?;
    m.add_function(wrap_pyfunction!(source::validate_finnhub, m)?)?;
    m.add_function(wrap_pyfunction!(source::parse_frame, m)?)?;
    m.add_function(wrap_pyfunction!(sink::run_sink, m)?)?;
    m.add_function(wrap_pyfunction!(transform::run_transform, m)?)?;
    m.add_function(wrap_pyfunction!(transform::transform_rules, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::runtime_pid, m)?)?;
    Ok(())
}
