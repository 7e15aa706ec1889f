"""The stockpipe exception tree.

Every error raised by stockpipe, from Python or from the Rust core, is a
``StockpipeError``. Subclasses also derive from the built-in they resemble, so
``except ValueError`` catches a bad setting.

Example:
    >>> from stockpipe.exceptions import ConfigError
    >>> issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DevStackError",
    "IngestError",
    "KafkaError",
    "SinkError",
    "StockpipeError",
    "TransformError",
    "WarehouseError",
]


class StockpipeError(Exception):
    """Base class of every stockpipe error."""


class ConfigError(StockpipeError, ValueError):
    """A setting is missing, unknown or invalid; the message names the key and its source."""


class IngestError(StockpipeError):
    """The market-data source failed (WebSocket, REST, simulator)."""


class AuthenticationError(IngestError, PermissionError):
    """The data provider refused the API key."""


class KafkaError(StockpipeError, ConnectionError):
    """Kafka could not be reached or refused an operation."""


class SinkError(StockpipeError):
    """Writing batches to object storage failed."""


class TransformError(StockpipeError):
    """Raw JSONL could not be turned into Parquet."""


class WarehouseError(StockpipeError):
    """Loading or querying a warehouse failed."""


class DevStackError(StockpipeError, RuntimeError):
    """The local development stack could not be started or stopped."""
