"""The checks a configuration passes once loaded: values whose type alone does not make them valid
(ranges, names, URIs, files). Each failure is a :class:`~stockpipe.exceptions.ConfigError` naming the
key, its value and where the value came from."""

from __future__ import annotations

import math
import os
import re

from stockpipe.config import Config, fields_of, lookup_field, show_value
from stockpipe.exceptions import ConfigError
from stockpipe.settings import SECTIONS
from stockpipe.uris import LAKE_URI_EXPECTED, is_lake_uri, warehouse_uri_problem

__all__ = ["POSITIVE", "validate"]


def _fail(cfg: Config, section: str, key: str, message: str) -> None:
    f = lookup_field(section, key, "validation")
    value = getattr(getattr(cfg, section), key)
    raise ConfigError(f"[{section}] {key} = {show_value(f, value)} (from {cfg.source_of(section, key)}): {message}")


#: Settings that must be above zero (every other number must not be negative).
POSITIVE = {
    ("sink", "batch_size"),
    ("sink", "batch_seconds"),
    ("sink", "batch_bytes"),
    ("sink", "max_buffered_records"),
    ("finnhub", "max_symbols"),
    ("finnhub", "max_frame_bytes"),
    ("finnhub", "quotes_per_minute"),
    ("finnhub", "backoff_initial_s"),
    ("finnhub", "backoff_max_s"),
    ("finnhub", "stable_after_s"),
    ("finnhub", "silence_timeout_s"),
    ("kafka", "batch_size_bytes"),
    ("simulate", "trades_per_frame"),
    ("simulate", "rate"),
    ("simulate", "ping_interval_s"),
    ("simulate", "max_symbols"),
    ("simulate", "rest_per_minute"),
    ("simulate", "rest_per_second"),
    ("dev", "brokers"),
    ("transform", "rows_per_file"),
    ("glue", "workers"),
    ("glue", "poll_seconds"),
    ("warehouse", "poll_seconds"),
}


def validate(cfg: Config) -> None:
    """Checks values whose type alone does not make them valid: numbers first, then each stage's
    settings in the pipeline's order; the first failure raises.

    Example:
        >>> from stockpipe import load_config
        >>> load_config(env={"STOCKPIPE_SINK_BATCH_SIZE": "0"}, use_default_file=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        stockpipe.exceptions.ConfigError: [sink] batch_size = 0 (from env ...): must be greater than zero
    """
    _numbers(cfg)
    _kafka(cfg)
    _source(cfg)
    _sink(cfg)
    _lake_and_warehouse(cfg)
    _dev_stack(cfg)


def _numbers(cfg: Config) -> None:
    # Values set from Python skip `coerce`; no number here is meaningful negative or infinite.
    for section in SECTIONS:
        for f in fields_of(section):
            value = getattr(getattr(cfg, section), f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                _fail(cfg, section, f.name, "expected a finite number")
            if (section, f.name) in POSITIVE and value <= 0:
                _fail(cfg, section, f.name, "must be greater than zero")
            if value < 0:
                _fail(cfg, section, f.name, "must not be negative")


def _host_port(value: str) -> bool:
    host, sep, port = value.strip().rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _kafka(cfg: Config) -> None:
    if not all(_host_port(server) for server in cfg.kafka.bootstrap_servers.split(",")):
        _fail(cfg, "kafka", "bootstrap_servers", "expected HOST:PORT[,HOST:PORT...]")
    for key in ("topic", "dlq_topic", "quotes_topic"):
        name = getattr(cfg.kafka, key)
        legal = name not in ("", ".", "..") and len(name) <= 249
        if not (legal and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)):
            _fail(cfg, "kafka", key, "expected a Kafka topic name: letters, digits, '.', '_' and '-' (at most 249)")
    protocols = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
    if cfg.kafka.security_protocol.lower() not in protocols:
        _fail(cfg, "kafka", "security_protocol", f"expected one of {', '.join(protocols)}")
    for key in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
        value = getattr(cfg.kafka, key)
        if value and not os.access(value, os.R_OK):
            _fail(cfg, "kafka", key, "file is missing or unreadable")
    if cfg.kafka.compression not in ("none", "gzip", "snappy", "lz4", "zstd"):
        _fail(cfg, "kafka", "compression", "expected none, gzip, snappy, lz4 or zstd")


def _source(cfg: Config) -> None:
    """The Finnhub client, the producer and the simulator."""
    if cfg.finnhub.backoff_max_s < cfg.finnhub.backoff_initial_s:
        _fail(cfg, "finnhub", "backoff_max_s", "must be at least backoff_initial_s")
    for section in ("finnhub", "simulate"):
        if not getattr(cfg, section).symbols:
            _fail(cfg, section, "symbols", "expected at least one symbol (comma separated)")
    if cfg.producer.mode not in ("ws", "quotes"):
        _fail(cfg, "producer", "mode", "expected ws or quotes")
    if cfg.simulate.disconnect_every_s is not None and cfg.simulate.disconnect_every_s <= 0:
        _fail(cfg, "simulate", "disconnect_every_s", "must be greater than zero")
    for key in ("duplicate_rate", "out_of_order_rate", "malformed_rate"):
        if not 0 <= getattr(cfg.simulate, key) <= 1:
            _fail(cfg, "simulate", key, "expected a share between 0 and 1")
    from stockpipe._native import DISCONNECT_KINDS as kinds

    if any(k not in kinds for k in cfg.simulate.disconnect_kinds):
        _fail(cfg, "simulate", "disconnect_kinds", f"expected some of {', '.join(kinds)}")
    if not 0 <= cfg.simulate.port < 65536:
        _fail(cfg, "simulate", "port", "expected 0 (any free port) to 65535")
    if not 400 <= cfg.simulate.reject_status < 600:
        _fail(cfg, "simulate", "reject_status", "expected an HTTP error status (400-599)")


def _sink(cfg: Config) -> None:
    """The sink, and the metrics endpoints of the producer and the sink."""
    if cfg.sink.max_buffered_records < cfg.sink.batch_size:
        # A partition stops reading at this mark, so a batch of batch_size would never fill.
        _fail(
            cfg,
            "sink",
            "max_buffered_records",
            f"must be at least batch_size ({cfg.sink.batch_size}): a partition pauses at this many records, "
            "so its batches would close only after batch_seconds",
        )
    for section in ("producer", "sink"):
        if (address := getattr(cfg, section).metrics_address) and not _host_port(address):
            _fail(cfg, section, "metrics_address", "expected HOST:PORT (0.0.0.0:PORT listens on every interface)")
    if cfg.sink.sse not in ("AES256", "aws:kms", "none"):
        _fail(cfg, "sink", "sse", "expected AES256, aws:kms or none")


def _lake_and_warehouse(cfg: Config) -> None:
    """Where the zones live, the transform, Glue and the warehouse."""
    if cfg.transform.sse not in ("AES256", "none"):
        _fail(cfg, "transform", "sse", "expected AES256 or none")
    if cfg.transform.compression not in ("zstd", "snappy", "none"):
        _fail(cfg, "transform", "compression", "expected zstd, snappy or none")
    if cfg.transform.engine not in ("rust", "spark"):
        _fail(cfg, "transform", "engine", "expected rust or spark")
    if cfg.glue.source not in ("catalog", "s3"):
        _fail(cfg, "glue", "source", "expected catalog or s3")
    if cfg.glue.lake is not None and not (cfg.glue.lake.startswith("s3://") and is_lake_uri(cfg.glue.lake)):
        _fail(cfg, "glue", "lake", "expected s3://bucket/prefix")
    if cfg.warehouse.format not in ("table", "csv", "json"):
        _fail(cfg, "warehouse", "format", "expected table, csv or json")
    if problem := warehouse_uri_problem(cfg.warehouse.warehouse):
        _fail(cfg, "warehouse", "warehouse", problem)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,126}", cfg.warehouse.schema):
        # Written into the load's and the queries' SQL: an unquoted Redshift identifier only.
        _fail(cfg, "warehouse", "schema", "expected a schema name: letters, digits, _ or $, not starting with a digit")
    lakes = [("sink", "output"), ("transform", "input"), ("transform", "output"), ("warehouse", "input")]
    for section, key in lakes:
        value = getattr(getattr(cfg, section), key)
        if value is not None and not is_lake_uri(value):
            _fail(cfg, section, key, LAKE_URI_EXPECTED)


def _dev_stack(cfg: Config) -> None:
    if cfg.dev.brokers not in (1, 3):
        _fail(cfg, "dev", "brokers", "expected 1 or 3")
    for key in ("kafka_port", "s3_port"):
        if not 0 < getattr(cfg.dev, key) < 65536:
            _fail(cfg, "dev", key, "expected a port (1-65535)")
