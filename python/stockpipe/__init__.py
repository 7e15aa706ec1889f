"""stockpipe: a real-time stock-market data pipeline with a Rust core.

Finnhub WebSocket → Kafka → S3 (JSONL) → Parquet → warehouse (DuckDB or Redshift).

Example:
    >>> import stockpipe
    >>> cfg = stockpipe.load_config(env={}, use_default_file=False)
    >>> cfg.kafka.topic
    'stock-data'
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from stockpipe.config import Config, load_config
from stockpipe.exceptions import (
    AuthenticationError,
    ConfigError,
    IngestError,
    KafkaError,
    SinkError,
    StockpipeError,
    TransformError,
    WarehouseError,
)

if TYPE_CHECKING:  # what __getattr__ below imports on first use
    from stockpipe._native import StopHandle
    from stockpipe.consumer import Sink, SinkStats
    from stockpipe.etl import TransformStats, transform
    from stockpipe.producer import Producer, ProducerStats

try:
    __version__ = version("stockpipe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> object:
    # The producer needs the native module; import it only when asked for, so that
    # `import stockpipe` (and the shared transform rules) work without it.
    if name in ("Producer", "ProducerStats"):
        from stockpipe import producer

        return getattr(producer, name)
    if name in ("Sink", "SinkStats"):
        from stockpipe import consumer

        return getattr(consumer, name)
    if name == "StopHandle":  # stops a run_simulator(...) from another thread
        from stockpipe import _native

        return _native.StopHandle
    if name in ("transform", "TransformStats"):
        from stockpipe import etl

        return getattr(etl, name)
    raise AttributeError(f"module 'stockpipe' has no attribute {name!r}")


__all__ = [
    "AuthenticationError",
    "Config",
    "ConfigError",
    "IngestError",
    "KafkaError",
    "Producer",
    "ProducerStats",
    "Sink",
    "SinkError",
    "SinkStats",
    "StockpipeError",
    "StopHandle",
    "TransformError",
    "TransformStats",
    "WarehouseError",
    "__version__",
    "load_config",
    "transform",
]
