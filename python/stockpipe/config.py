"""Configuration for every stage, loaded as defaults < config.ini < environment < flags.

Each setting lives in a section (``[finnhub]``, ``[kafka]``, ...) and is reachable
three ways: the ``config.ini`` key ``[section] key``, the environment variable
``STOCKPIPE_<SECTION>_<KEY>`` and, on every command that uses the section, the
flag ``--key-with-dashes``. ``FINNHUB_API_KEY`` is accepted for the API key, as
are the standard ``AWS_*`` variables for S3 credentials. Errors name the key and
where its value came from.

Example:
    >>> from stockpipe.config import load_config
    >>> cfg = load_config(env={}, use_default_file=False)
    >>> cfg.kafka.topic
    'stock-data'
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import math
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stockpipe.exceptions import ConfigError

__all__ = [
    "REDACTED",
    "Config",
    "DevSettings",
    "FinnhubSettings",
    "KafkaSettings",
    "ProducerSettings",
    "S3Settings",
    "SimulatorSettings",
    "SinkSettings",
    "TransformSettings",
    "WarehouseSettings",
    "load_config",
]

REDACTED = "***"
# Shorter values are not scrubbed from free text: replacing every "k" would mangle the message
# and reveal the value anyway.
MIN_SCRUBBED_LEN = 4


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
    batch_size: int = _opt(100, "records per object")
    batch_seconds: float = _opt(10.0, "close a batch after this many seconds")
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


@dataclass(kw_only=True)
class Config:
    """The effective configuration, one attribute per section."""

    finnhub: FinnhubSettings = field(default_factory=FinnhubSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    transform: TransformSettings = field(default_factory=TransformSettings)
    glue: GlueSettings = field(default_factory=GlueSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    simulate: SimulatorSettings = field(default_factory=SimulatorSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    #: ``(section, key)`` → where the value came from (``default``, ``config.ini``, ...).
    sources: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    #: ``(section, key)`` → the value :func:`load_config` left, to tell a value set later from Python.
    loaded: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    def source_of(self, section: str, key: str) -> str:
        """Where the current value of ``[section] key`` came from."""
        value = getattr(getattr(self, section), key)
        if (section, key) not in self.loaded:
            return self.sources.get((section, key), "Python")
        before = self.loaded[(section, key)]
        if before is not value and before != value:
            return "Python"
        return self.sources.get((section, key), "default")

    def section_json(self, section: str, *, only: tuple[str, ...] | None = None) -> str:
        """The section as JSON for the native core (secrets included: it never leaves the process)."""
        data = dataclasses.asdict(getattr(self, section))
        if only is not None:
            data = {k: v for k, v in data.items() if k in only}
        return json.dumps(data)

    def redacted(self) -> dict[str, dict[str, Any]]:
        """Every setting, with secrets replaced by ``***``."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            values: dict[str, Any] = {}
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if f.metadata.get("secret") and value:
                    value = REDACTED
                elif isinstance(value, str) and _uri_password(value):
                    value = value.replace(f":{_uri_password(value)}@", f":{REDACTED}@", 1)
                values[f.name] = value
            out[name] = values
        return out

    def secrets(self) -> list[str]:
        """Every secret value set, for scrubbing free text."""
        found: list[str] = []
        for name in SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if f.metadata.get("secret") and isinstance(value, str) and value:
                    found.append(value)
                elif isinstance(value, str) and (password := _uri_password(value)):
                    found.append(password)
        return found

    def scrub(self, text: str) -> str:
        """``text`` with every secret of at least ``MIN_SCRUBBED_LEN`` characters replaced by ``***``."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if len(secret) >= MIN_SCRUBBED_LEN:
                text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Config({self.redacted()!r})"


def fields_of(section: str) -> list[dataclasses.Field[Any]]:
    """The settings of a section, in declaration order."""
    return list(dataclasses.fields(SECTIONS[section]))


def flag_for(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a setting."""
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def env_name(section: str, key: str) -> str:
    return f"STOCKPIPE_{section.upper()}_{key.upper()}"


def env_names(section: str, key: str) -> list[str]:
    """Every environment variable that sets ``[section] key``: its own, then the well-known aliases
    (read first, so its own wins)."""
    return [env_name(section, key), *(name for name, target in ALIASES.items() if target == (section, key))]


def _type_name(f: dataclasses.Field[Any]) -> str:
    return str(f.type).replace("typing.", "")


def coerce(section: str, f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    """Converts a raw value (text from a file, env or flag) to the setting's type."""
    where = f"[{section}] {f.name} = {_show(f, raw)} (from {source})"
    kind = _type_name(f)
    if raw is None:
        return None
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    optional = "None" in kind
    if optional and text == "":
        return None
    try:
        if kind.startswith("int"):
            return _whole(text)
        if kind.startswith("float"):
            return _finite(text)
        if kind.startswith("bool"):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind.startswith("list"):
            return [s.strip() for s in text.split(",") if s.strip()]
        if kind.startswith("dict"):
            pairs: dict[str, str] = {}
            for item in filter(None, (s.strip() for s in text.split(","))):
                key, sep, value = item.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"expected KEY=VALUE, got {item!r}")
                pairs[key.strip()] = value.strip()
            return pairs
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return text


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _show(f: dataclasses.Field[Any], raw: Any) -> str:
    if isinstance(raw, str) and (password := _uri_password(raw)):
        return repr(raw.replace(f":{password}@", f":{REDACTED}@", 1))
    return REDACTED if f.metadata.get("secret") and raw else repr(raw)


def _uri_password(value: str) -> str | None:
    """The password of a ``scheme://user:password@host`` value (a Redshift URI), if any."""
    if "://" not in value or "@" not in value:
        return None
    from urllib.parse import urlsplit

    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


def default_config_file() -> Path | None:
    """``$STOCKPIPE_CONFIG`` or ``./config.ini`` when it exists."""
    explicit = os.environ.get("STOCKPIPE_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("config.ini")
    return local if local.exists() else None


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[tuple[str, str], Any] | None = None,
    use_default_file: bool = True,
) -> Config:
    """Builds the effective configuration.

    Args:
        config_file: an ini file; ``None`` uses ``$STOCKPIPE_CONFIG`` or ``./config.ini``.
        env: environment to read (defaults to ``os.environ``).
        flags: ``(section, key)`` → value given on the command line.
        use_default_file: look for ``./config.ini`` when ``config_file`` is None.

    Raises:
        ConfigError: naming the key and the source of any bad value.
    """
    env = os.environ if env is None else env
    cfg = Config()
    for section in SECTIONS:
        for f in fields_of(section):
            cfg.sources[(section, f.name)] = "default"

    path = Path(config_file) if config_file is not None else (default_config_file() if use_default_file else None)
    if path is not None:
        _apply_file(cfg, path)
    _apply_env(cfg, env)
    for (section, key), value in (flags or {}).items():
        if value is None:
            continue
        f = _field(section, key, "command line")
        _set(cfg, section, f, coerce(section, f, value, f"flag {flag_for(f)}"), f"flag {flag_for(f)}")
    validate(cfg)
    cfg.loaded = {
        (section, f.name): _snapshot(getattr(getattr(cfg, section), f.name))
        for section in SECTIONS
        for f in fields_of(section)
    }
    return cfg


def _snapshot(value: Any) -> Any:
    """A copy of a list value, so that one changed in place later is seen as changed."""
    return list(value) if isinstance(value, list) else value


def _field(section: str, key: str, source: str) -> dataclasses.Field[Any]:
    if section not in SECTIONS:
        known = ", ".join(SECTIONS)
        raise ConfigError(f"unknown section [{section}] (from {source}); known sections: {known}")
    for f in fields_of(section):
        if f.name == key:
            return f
    raise ConfigError(f"unknown key [{section}] {key} (from {source})")


def _set(cfg: Config, section: str, f: dataclasses.Field[Any], value: Any, source: str) -> None:
    setattr(getattr(cfg, section), f.name, value)
    cfg.sources[(section, f.name)] = source


def _apply_file(cfg: Config, path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.MissingSectionHeaderError as exc:
        line = exc.line.strip()
        raise ConfigError(f"config file {path}, line {exc.lineno}: {line!r} comes before any [section]") from None
    except configparser.ParsingError as exc:
        lineno = exc.errors[0][0]
        line = path.read_text(encoding="utf-8").splitlines()[lineno - 1].strip()
        raise ConfigError(f"config file {path}, line {lineno}: expected KEY = VALUE, got {line!r}") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(f"config file {path}, line {exc.lineno}: [{exc.section}] {exc.option} is set twice") from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"config file {path}, line {exc.lineno}: [{exc.section}] appears twice") from None
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {' '.join(str(exc).split())}") from None
    has_secret = False
    for section in parser.sections():
        for key, raw in parser.items(section):
            source = f"{path} [{section}]"
            f = _field(section, key, str(path))
            has_secret = has_secret or bool(f.metadata.get("secret") and raw)
            _set(cfg, section, f, coerce(section, f, raw, source), str(path))
    if has_secret and sys.platform != "win32":
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            import logging

            logging.getLogger("stockpipe.config").warning(
                "%s holds a secret and is readable by other users; run: chmod 600 %s", path, path
            )


def _apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    for name, (section, key) in ALIASES.items():
        if env.get(name):
            f = _field(section, key, name)
            _set(cfg, section, f, coerce(section, f, env[name], f"env {name}"), f"env {name}")
    for name, raw in env.items():
        if not name.startswith("STOCKPIPE_") or name == "STOCKPIPE_CONFIG":
            continue
        rest = name[len("STOCKPIPE_") :].lower()
        found = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if found is None:
            continue  # not a setting (e.g. a variable of another tool)
        section = found
        key = rest[len(section) + 1 :]
        f = _field(section, key, f"env {name}")
        _set(cfg, section, f, coerce(section, f, raw, f"env {name}"), f"env {name}")


def _fail(cfg: Config, section: str, key: str, message: str) -> None:
    f = _field(section, key, "validation")
    value = getattr(getattr(cfg, section), key)
    raise ConfigError(f"[{section}] {key} = {_show(f, value)} (from {cfg.source_of(section, key)}): {message}")


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
    """Checks values whose type alone does not make them valid."""
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
    if cfg.sink.max_buffered_records < cfg.sink.batch_size:
        # A partition stops reading at this mark, so a batch of batch_size would never fill.
        _fail(
            cfg,
            "sink",
            "max_buffered_records",
            f"must be at least batch_size ({cfg.sink.batch_size}): a partition pauses at this many records, "
            "so its batches would close only after batch_seconds",
        )
    for server in cfg.kafka.bootstrap_servers.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
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
    if cfg.finnhub.backoff_max_s < cfg.finnhub.backoff_initial_s:
        _fail(cfg, "finnhub", "backoff_max_s", "must be at least backoff_initial_s")
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
    if cfg.dev.brokers not in (1, 3):
        _fail(cfg, "dev", "brokers", "expected 1 or 3")
    for key in ("kafka_port", "s3_port"):
        if not 0 < getattr(cfg.dev, key) < 65536:
            _fail(cfg, "dev", key, "expected a port (1-65535)")
    for section in ("producer", "sink"):
        if address := getattr(cfg, section).metrics_address:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                _fail(cfg, section, "metrics_address", "expected HOST:PORT (0.0.0.0:PORT listens on every interface)")
    if cfg.sink.sse not in ("AES256", "aws:kms", "none"):
        _fail(cfg, "sink", "sse", "expected AES256, aws:kms or none")
    if cfg.transform.sse not in ("AES256", "none"):
        _fail(cfg, "transform", "sse", "expected AES256 or none")
    if cfg.transform.compression not in ("zstd", "snappy", "none"):
        _fail(cfg, "transform", "compression", "expected zstd, snappy or none")
    if cfg.producer.mode not in ("ws", "quotes"):
        _fail(cfg, "producer", "mode", "expected ws or quotes")
    if cfg.glue.source not in ("catalog", "s3"):
        _fail(cfg, "glue", "source", "expected catalog or s3")
    if cfg.glue.lake is not None and not (cfg.glue.lake.startswith("s3://") and is_lake_uri(cfg.glue.lake)):
        _fail(cfg, "glue", "lake", "expected s3://bucket/prefix")
    if cfg.warehouse.format not in ("table", "csv", "json"):
        _fail(cfg, "warehouse", "format", "expected table, csv or json")
    if problem := warehouse_uri_problem(cfg.warehouse.warehouse):
        _fail(cfg, "warehouse", "warehouse", problem)
    if cfg.transform.engine not in ("rust", "spark"):
        _fail(cfg, "transform", "engine", "expected rust or spark")
    lakes = [("sink", "output"), ("transform", "input"), ("transform", "output"), ("warehouse", "input")]
    for section, key in lakes:
        value = getattr(getattr(cfg, section), key)
        if value is not None and not is_lake_uri(value):
            _fail(cfg, section, key, LAKE_URI_EXPECTED)


LAKE_URI_EXPECTED = "expected s3://bucket/prefix or file:///path"


def warehouse_uri_problem(uri: str) -> str | None:
    """What is wrong with a ``[warehouse] warehouse`` URI, or None when it names a warehouse."""
    if uri.startswith("duckdb://"):
        return None if uri[len("duckdb://") :] else "expected duckdb:///path/file.duckdb"
    if uri.startswith("redshift://"):
        u = urlsplit(uri)
        if u.hostname and u.path.strip("/"):
            return None
        return "expected redshift://WORKGROUP/DATABASE or redshift://USER:PASSWORD@HOST:PORT/DATABASE"
    return "expected duckdb:///path or redshift://WORKGROUP/DATABASE"


def is_lake_uri(uri: str) -> bool:
    """Whether ``uri`` names object storage the sink and the transform open: ``s3://`` with a bucket,
    or ``file://`` with a path (the same rule as the Rust store's)."""
    if uri.startswith("s3://"):
        return uri[len("s3://") :].partition("/")[0] != ""
    return uri.startswith("file://") and uri != "file://"


def local_lake_problem(uri: str) -> str | None:
    """What is wrong with the directory a ``file://`` lake to read names (a mistyped path), else None.

    A lake that exists but holds nothing yet is not a mistake: the commands that read it say so
    and exit 0. S3 has the same check in the store, which fails on a missing bucket."""
    if not uri.startswith("file://"):
        return None
    root = uri[len("file://") :]
    if os.path.isdir(root):
        return None
    return f"{root} is not a directory" if os.path.exists(root) else f"no such directory {root}"
