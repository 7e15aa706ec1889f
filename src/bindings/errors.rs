//! The one conversion from Rust errors into the Python exception tree defined in
//! `stockpipe.exceptions` (so that tree has a single definition, importable without Rust).

use pyo3::prelude::*;

/// Builds `stockpipe.exceptions.<class>(message)`.
pub fn py_error(class: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        match py
            .import("stockpipe.exceptions")
            .and_then(|m| m.getattr(class))
            .and_then(|cls| cls.call1((message.clone(),)))
        {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        }
    })
}

pub fn config_error(e: impl std::fmt::Display) -> PyErr {
    py_error("ConfigError", e.to_string())
}

impl From<crate::source::Error> for PyErr {
    fn from(e: crate::source::Error) -> Self {
        use crate::source::Error as E;
        match &e {
            E::TooManySymbols { .. } | E::BadUrl(_) | E::NoApiKey => config_error(&e),
            E::Unauthorized => py_error("AuthenticationError", e.to_string()),
            E::Kafka(k) => kafka_error(k),
            _ => py_error("IngestError", e.to_string()),
        }
    }
}

impl From<crate::kafka::Error> for PyErr {
    fn from(e: crate::kafka::Error) -> Self {
        kafka_error(&e)
    }
}

fn kafka_error(e: &crate::kafka::Error) -> PyErr {
    match e {
        crate::kafka::Error::Config(c) => config_error(c),
        other => py_error("KafkaError", other.to_string()),
    }
}
