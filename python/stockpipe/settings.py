"""The settings of each section (``[finnhub]``, ``[kafka]``, ...): keyword-only dataclasses whose
defaults, help texts and secrecy the config loader, the CLI flags and ``config show`` read.

They mirror the Rust core's typed config structs (``src/config.rs``); :mod:`stockpipe.config`
loads them from the file, the environment and flags, and checks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ALIASES",
    "SECTIONS",
    "DevSettings",
    "FinnhubSettings",
    "GlueSettings",
    "KafkaSettings",
    "ProducerSettings",
    "S3Settings",
    "SimulatorSettings",
    "SinkSettings",
    "TransformSettings",
    "WarehouseSettings",
]


def _opt(default: Any, help: str, *, secret: bool = False, flag: str | None = None) -> Any:
    meta = {"help": help, "secret": secret, "flag": flag}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _cache_home() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "stockpipe")


@dataclass(kw_only=True)
class FinnhubSettings:
    """``[finnhub]``: the market-data source."""

    api_key: str | None = _opt(None, "Finnhub API key", secret=True)
    ws_url: str = _opt("wss://ws.finnhub.io", "WebSocket endpoint without credentials")
    rest_url: str = _opt("https://finnhub.io/api/v1", "REST base URL")
    symbols: list[str] = _opt(["AAPL", "MSFT", "AMZN", "BINANCE:BTCUSDT"], "symbols to subscribe, comma separated")
    max_symbols: int = _opt(50, "symbols one connection may subscribe (the free plan allows 50)")
    backoff_initial_s: float = _opt(1.0, "first reconnect delay, seconds")
    backoff_max_s: float = _opt(60.0, "reconnect delay cap, seconds")
    stable_after_s: float = _opt(60.0, "a connection up this long resets the backoff")
    silence_timeout_s: float = _opt(150.0, "reconnect after this long without any message")
    rate_limited_backoff_s: float = _opt(60.0, "minimum wait after HTTP 429 at the upgrade")
    dedupe_window_ms: int = _opt(2000, "drop whole messages repeated within this window (0: off)")
    max_frame_bytes: int = _opt(1 << 20, "refuse frames larger than this")
    quotes_per_minute: int = _opt(60, "REST budget for the quote poller")


@dataclass(kw_only=True)
class KafkaSettings:
    """``[kafka]``: the cluster, security, and a raw librdkafka passthrough."""

    bootstrap_servers: str = _opt("127.0.0.1:9092", "HOST:PORT[,HOST:PORT...]")
    topic: str = _opt("stock-data", "trade topic")
    dlq_topic: str = _opt("stock-data-dlq", "dead-letter topic")
    quotes_topic: str = _opt("stock-quotes", "topic for REST quote snapshots")
    group_id: str = _opt("stockpipe-s3-sink", "consumer group of the sink")
    security_protocol: str = _opt("plaintext", "plaintext, ssl, sasl_plaintext or sasl_ssl")
    ssl_ca_location: str | None = _opt(None, "CA certificate (PEM) to verify brokers")
    ssl_certificate_location: str | None = _opt(None, "client certificate (PEM)")
    ssl_key_location: str | None = _opt(None, "client key (PEM)")
    ssl_key_password: str | None = _opt(None, "client key password", secret=True)
    ssl_endpoint_identification: str | None = _opt(None, "https (check hostnames, default) or none")
    sasl_mechanism: str | None = _opt(None, "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
    sasl_username: str | None = _opt(None, "SASL user")
    sasl_password: str | None = _opt(None, "SASL password", secret=True)
    compression: str = _opt("lz4", "none, gzip, snappy, lz4 or zstd")
    linger_ms: int = _opt(2, "producer linger, milliseconds (latency against batching)")
    batch_size_bytes: int = _opt(1_000_000, "producer batch size, bytes")
    idempotence: bool = _opt(True, "idempotent producer (keep on)")
    librdkafka: dict[str, str] = _opt({}, "raw librdkafka properties, KEY=VALUE,KEY=VALUE")

    def pipeline_topics(self) -> list[tuple[str, int]]:
        """The topics the pipeline needs, with their partition counts."""
        return [(self.topic, 3), (self.dlq_topic, 1), (self.quotes_topic, 3)]


@dataclass(kw_only=True)
class ProducerSettings:
    """``[producer]``: one run of ``python -m stockpipe.producer``."""

    mode: str = _opt("ws", "ws (WebSocket trades) or quotes (REST snapshots)")
    duration: float | None = _opt(None, "stop after this many seconds")
    max_messages: int | None = _opt(None, "stop after publishing this many trades")
    status_interval: float = _opt(1.0, "seconds between status lines (0: quiet)")
    metrics_address: str | None = _opt(
        None, "serve Prometheus metrics on HOST:PORT at /metrics while running (e.g. 0.0.0.0:9464)"
    )


@dataclass(kw_only=True)
class S3Settings:
    """``[s3]``: how to reach object storage."""

    endpoint_url: str | None = _opt(None, "S3-compatible endpoint (empty: AWS)", flag="--s3-endpoint-url")
    region: str = _opt("us-east-1", "AWS region", flag="--region")
    access_key_id: str | None = _opt(None, "access key", secret=True)
    secret_access_key: str | None = _opt(None, "secret key", secret=True)
    session_token: str | None = _opt(None, "session token of temporary credentials", secret=True)
    force_path_style: bool = _opt(True, "path-style addressing (needed by most local servers)")


@dataclass(kw_only=True)
class SinkSettings:
    """``[sink]``: Kafka → JSONL objects."""

    output: str = _opt("file://./stockpipe-data/kafka.stock.market.project", "s3://bucket/prefix or file:///path")
    raw_prefix: str = _opt("raw.data", "prefix of raw objects")
    batch_size: int = _opt(100, "records per object (each object holds one Kafka partition's records)")
    batch_seconds: float = _opt(10.0, "close a partition's batch this many seconds after its first record")
    batch_bytes: int = _opt(8 << 20, "close a batch at this many bytes")
    gzip: bool = _opt(False, "gzip objects")
    sse: str = _opt("AES256", "AES256, aws:kms or none")
    sse_kms_key_id: str | None = _opt(None, "KMS key id for aws:kms")
    max_buffered_records: int = _opt(
        100_000, "pause a partition beyond this many buffered records (at least batch_size)"
    )
    duration: float | None = _opt(None, "stop after this many seconds")
    status_interval: float = _opt(1.0, "seconds between status lines (0: quiet)")
    metrics_address: str | None = _opt(
        None, "serve Prometheus metrics on HOST:PORT at /metrics while running (e.g. 0.0.0.0:9464)"
    )


@dataclass(kw_only=True)
class TransformSettings:
    """``[transform]``: raw JSONL → Parquet."""

    input: str = _opt("file://./stockpipe-data/kafka.stock.market.project", "where raw.data/ lives")
    output: str = _opt("file://./stockpipe-data/kafka.stock.market.project", "where processed.data/ goes")
    engine: str = _opt("rust", "rust or spark")
    raw_prefix: str = _opt("raw.data", "prefix of raw JSONL objects (the sink's raw_prefix)")
    processed_prefix: str = _opt("processed.data", "prefix of Parquet output")
    quarantine_prefix: str = _opt("quarantine.data", "prefix of refused rows")
    compression: str = _opt("zstd", "Parquet compression: zstd, snappy or none")
    rows_per_file: int = _opt(4_000_000, "split a day into files of at most this many rows")
    sse: str = _opt("AES256", "server-side encryption of written objects: AES256 or none")


@dataclass(kw_only=True)
class GlueSettings:
    """``[glue]``: the AWS Glue Data Catalog, crawler and job (``stockpipe glue``)."""

    lake: str | None = _opt(None, "s3://bucket/prefix holding raw.data/ (default: [transform] output)")
    region: str = _opt("us-east-1", "AWS region of Glue", flag="--glue-region")
    endpoint_url: str | None = _opt(None, "Glue endpoint (empty: AWS; set for an emulator)", flag="--glue-endpoint-url")
    role: str | None = _opt(None, "IAM role ARN the crawler and the job run as")
    database: str = _opt("stock_db", "Data Catalog database")
    raw_table: str = _opt("raw_data", "table over raw.data/")
    processed_table: str = _opt("processed_data", "table over processed.data/")
    crawler: str = _opt("stockpipe-raw-crawler", "crawler over raw.data/")
    job_name: str = _opt("stockpipe-etl", "Glue job name")
    glue_version: str = _opt("5.0", "Glue runtime (5.0 = Spark 3.5)")
    worker_type: str = _opt("G.1X", "worker type")
    workers: int = _opt(2, "number of workers")
    source: str = _opt("catalog", "what the job reads: catalog (with job bookmarks) or s3")
    poll_seconds: float = _opt(15.0, "seconds between job state checks of glue run")


@dataclass(kw_only=True)
class WarehouseSettings:
    """``[warehouse]``: where processed data is loaded and queried."""

    warehouse: str = _opt(
        "duckdb://./stockpipe-data/stockpipe.duckdb",
        "duckdb:///path, redshift://WORKGROUP/DATABASE (Data API) or redshift://USER:PASSWORD@HOST:PORT/DATABASE",
    )
    input: str | None = _opt(None, "lake holding processed.data/ (default: [transform] output)")
    iam_role: str | None = _opt(None, "IAM role ARN Redshift COPY assumes")
    schema: str = _opt("public", "Redshift schema of stock_prices")
    region: str | None = _opt(None, "region of the Redshift Data API (default: [s3] region)", flag="--redshift-region")
    poll_seconds: float = _opt(1.0, "seconds between Redshift statement status checks")
    format: str = _opt("table", "output of stockpipe query: table, csv or json")


@dataclass(kw_only=True)
class SimulatorSettings:
    """``[simulate]``: the local Finnhub-compatible server."""

    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(8765, "port to listen on (0: any free port)")
    symbols: list[str] = _opt(["AAPL", "MSFT", "AMZN", "BINANCE:BTCUSDT"], "symbols the market knows")
    rate: float = _opt(100.0, "trades per second per connection")
    token: str | None = _opt(None, "API key to require (empty: any non-empty key)", secret=True)
    max_symbols: int = _opt(50, "per-connection symbol cap")
    ping_interval_s: float = _opt(60.0, "seconds between pings")
    trades_per_frame: int = _opt(20, "trades per trade message")
    ledger: str | None = _opt(None, "write every delivered trade to this JSONL file")
    replay: str | None = _opt(None, "replay frames from this JSONL file")
    duration_s: float | None = _opt(None, "stop after this many seconds", flag="--duration")
    max_trades: int | None = _opt(None, "stop generating after this many trades")
    seed: int = _opt(42, "random seed")
    disconnect_every_s: float | None = _opt(None, "inject a disconnect this often")
    disconnect_kinds: list[str] = _opt(
        ["clean", "noclose", "reset", "silent"], "cycle of disconnect kinds: clean, noclose (no-close), reset, silent"
    )
    duplicate_rate: float = _opt(0.0, "share of messages sent 2-3 times")
    out_of_order_rate: float = _opt(0.0, "share of trades with a time going backwards")
    malformed_rate: float = _opt(0.0, "share of ticks that add a malformed frame")
    reject_upgrades: int = _opt(0, "answer the first N upgrades with --reject-status")
    reject_status: int = _opt(429, "status for rejected upgrades")
    rest_per_minute: int = _opt(60, "REST calls allowed per minute")
    rest_per_second: int = _opt(30, "REST calls allowed per second")


@dataclass(kw_only=True)
class DevSettings:
    """``[dev]``: the local stack of real services."""

    home: str = _opt(str(Path(_cache_home()) / "dev"), "state, data and logs of the stack")
    cache_dir: str = _opt(_cache_home(), "downloaded jars and binaries")
    brokers: int = _opt(1, "Kafka brokers (1 or 3)")
    tls: bool = _opt(False, "TLS listeners (and controller quorum) with a generated CA")
    sasl: bool = _opt(False, "SASL/SCRAM-SHA-512 on the TLS listeners (needs --tls)")
    kafka_version: str = _opt("3.6.1", "Apache Kafka broker version (Maven Central)")
    kafka_port: int = _opt(9092, "first broker port (brokers use every second port)")
    s3_port: int = _opt(9000, "S3 server port")
    bucket: str = _opt("kafka.stock.market.project", "bucket created for the pipeline")


SECTIONS: dict[str, type] = {
    "finnhub": FinnhubSettings,
    "kafka": KafkaSettings,
    "producer": ProducerSettings,
    "s3": S3Settings,
    "sink": SinkSettings,
    "transform": TransformSettings,
    "glue": GlueSettings,
    "warehouse": WarehouseSettings,
    "simulate": SimulatorSettings,
    "dev": DevSettings,
}

#: Well-known variables accepted besides STOCKPIPE_<SECTION>_<KEY>.
ALIASES: dict[str, tuple[str, str]] = {
    "FINNHUB_API_KEY": ("finnhub", "api_key"),
    "AWS_ACCESS_KEY_ID": ("s3", "access_key_id"),
    "AWS_SECRET_ACCESS_KEY": ("s3", "secret_access_key"),
    "AWS_SESSION_TOKEN": ("s3", "session_token"),
    "AWS_REGION": ("s3", "region"),
    "AWS_ENDPOINT_URL_S3": ("s3", "endpoint_url"),
}
