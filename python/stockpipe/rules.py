"""The cleaning rules of the transform, defined once.

Both engines apply these rules: the Rust engine (``stockpipe etl --engine rust``) checks at start
that its compiled copy of :data:`SPEC` equals this one and refuses to run otherwise, and the
Glue/PySpark job (``glue/stockpipe_etl.py``) calls :func:`clean_line` on every raw line. This
module imports nothing but the standard library, so a Glue job can ship it as plain Python.

A raw line is one JSON object written by the sink (see ``docs/record-format.md``). A line is
either *clean*, giving one processed row in the column order of :data:`COLUMNS`, or
*quarantined* with the first reason of :data:`REASONS` that applies, checked in that order.
Rows with a (``kafka_partition``, ``kafka_offset``) already seen are duplicates and dropped;
the first one read wins (identical lines in practice, as Kafka gives each record one identity).
"""

from __future__ import annotations

import datetime as _dt
import json
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple, TypeGuard

VERSION = 1
"""Bumped whenever a rule changes what a line becomes."""

PRICE_PRECISION = 18
PRICE_SCALE = 8
"""Prices are DECIMAL(18,8): ten integer digits and eight decimals, exact. More decimals round
half up (as Spark, Redshift and DuckDB cast)."""

TIME_MIN_MS = 631_152_000_000
"""1990-01-01T00:00:00Z. Trade times before it are refused."""
TIME_MAX_MS = 4_102_444_800_000
"""2100-01-01T00:00:00Z (exclusive). Catches microseconds or nanoseconds sent as milliseconds."""

SYMBOL_MAX_LEN = 64
"""Symbols are 1-64 printable ASCII characters after trimming spaces, tabs, CR and LF, upper-cased."""
SYMBOL_STRIP = " \t\r\n"

CONDITIONS_SEPARATOR = ","
"""``conditions`` is stored as its strings joined by a comma (``[]`` → ``""``, ``null`` → NULL),
so every warehouse reads it as plain text; a condition containing a comma is refused."""

MAX_DEPTH = 64
"""Objects and arrays may nest this deep (the record itself is depth 1); deeper is ``not_json``."""

SCHEMA_VERSIONS = (1,)
"""Record schema versions this rule set understands (absent means 1)."""

COLUMNS: tuple[tuple[str, str], ...] = (
    ("symbol", "string"),
    ("price", f"decimal({PRICE_PRECISION},{PRICE_SCALE})"),
    ("volume", "double"),
    ("trade_ts", "timestamp_ms_utc"),
    ("conditions", "string"),
    ("received_ts", "timestamp_ms_utc"),
    ("source", "string"),
    ("kafka_partition", "int32"),
    ("kafka_offset", "int64"),
)
"""The processed schema: names, order and types of the Parquet columns (all nullable).
Timestamps are milliseconds, UTC; never nanoseconds."""

PARTITION_COLUMNS = ("year", "month", "day")
"""Hive-style partition of processed rows: the UTC day of ``trade_ts`` (in the path only)."""

SORT_KEY = ("symbol", "trade_ts", "kafka_partition", "kafka_offset")
"""Order of rows inside a day's files (helps compression and per-symbol scans)."""

DEDUPE_KEY = ("kafka_partition", "kafka_offset")

REASONS: tuple[str, ...] = (
    "not_json",  # not UTF-8 JSON, NaN/Infinity, a key given twice, a lone surrogate, nested > MAX_DEPTH
    "not_object",  # valid JSON but not an object
    "bad_schema_version",  # schema_version present and not one of SCHEMA_VERSIONS
    "missing_lineage",  # kafka_partition / kafka_offset absent or not non-negative integers
    "missing_symbol",  # symbol absent, null or empty after trimming
    "bad_symbol",  # symbol not a string, too long, or not printable ASCII
    "missing_price",  # price absent or null
    "bad_price",  # price not a number, or beyond DECIMAL(18,8)
    "non_positive_price",  # price <= 0 after rounding to 8 decimals
    "missing_time",  # trade_ts absent or null
    "bad_time",  # trade_ts not an integer, or outside [1990, 2100)
    "bad_volume",  # volume present and not a finite number >= 0
    "bad_conditions",  # conditions present and not a list of strings without commas
    "bad_received_ts",  # received_ts present and not an integer in [1990, 2100)
    "bad_source",  # source present and not a string
    "wrong_partition",  # the line sits in a raw day other than its trade_ts's UTC day
)
"""Why a line is quarantined, in the order the checks run."""

SPEC: dict[str, Any] = {
    "version": VERSION,
    "columns": [list(c) for c in COLUMNS],
    "partition_columns": list(PARTITION_COLUMNS),
    "sort_key": list(SORT_KEY),
    "dedupe_key": list(DEDUPE_KEY),
    "reasons": list(REASONS),
    "price_precision": PRICE_PRECISION,
    "price_scale": PRICE_SCALE,
    "time_min_ms": TIME_MIN_MS,
    "time_max_ms": TIME_MAX_MS,
    "symbol_max_len": SYMBOL_MAX_LEN,
    "symbol_strip": SYMBOL_STRIP,
    "conditions_separator": CONDITIONS_SEPARATOR,
    "schema_versions": list(SCHEMA_VERSIONS),
    "max_depth": MAX_DEPTH,
}
"""Everything above as one JSON-able value; the Rust engine compares it with its own."""


class Row(NamedTuple):
    """A clean, processed row in :data:`COLUMNS` order, plus its partition day."""

    symbol: str
    price: Decimal
    volume: float | None
    trade_ts: int
    conditions: str | None
    received_ts: int | None
    source: str | None
    kafka_partition: int
    kafka_offset: int

    @property
    def day(self) -> _dt.date:
        return day_of(self.trade_ts)


class Quarantined(NamedTuple):
    """A refused line, with its reason and the line as read."""

    reason: str
    raw: str


class RuleError(Exception):
    """A line breaks a rule; ``args[0]`` is the reason."""


_PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_SCALE)
_PRICE_LIMIT = Decimal(10) ** (PRICE_PRECISION - PRICE_SCALE)
_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1


def day_of(ms: int) -> _dt.date:
    """The UTC calendar day of a UNIX time in milliseconds."""
    return (_dt.datetime(1970, 1, 1) + _dt.timedelta(milliseconds=ms)).date()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _loads(line: str | bytes) -> Any:
    if isinstance(line, bytes):
        line = line.decode("utf-8")  # UnicodeDecodeError is a ValueError
    value = json.loads(
        line,
        parse_float=Decimal,
        parse_constant=_refuse_constant,
        object_pairs_hook=_unique_keys,
    )
    _check_structure(value, 1)
    return value


def _check_structure(value: Any, depth: int) -> None:
    # Refuses what JSON parsers disagree on: nesting beyond MAX_DEPTH, and strings holding a lone
    # UTF-16 surrogate ("\ud800" is accepted by Python, refused by others).
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone surrogate") from None
    elif isinstance(value, (dict, list)):
        if depth > MAX_DEPTH:
            raise ValueError("nested too deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(k, str):
                _check_structure(k, depth)
            _check_structure(v, depth + 1)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, Decimal)


def _price(v: Any) -> Decimal:
    if v is None:
        raise RuleError("missing_price")
    if not _is_number(v):
        raise RuleError("bad_price")
    d = Decimal(v)
    if d.is_zero():
        raise RuleError("non_positive_price")
    if d.adjusted() >= PRICE_PRECISION - PRICE_SCALE:
        raise RuleError("bad_price")
    if d.adjusted() < -PRICE_SCALE - 2:  # far below half a quantum: rounds to zero
        raise RuleError("non_positive_price")
    try:
        q = d.quantize(_PRICE_QUANTUM, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # pragma: no cover - excluded by the range checks above
        raise RuleError("bad_price") from None
    if abs(q) >= _PRICE_LIMIT:
        raise RuleError("bad_price")
    if q <= 0:
        raise RuleError("non_positive_price")
    return q


def _ms(v: Any) -> bool:
    return _is_int(v) and TIME_MIN_MS <= v < TIME_MAX_MS


def clean(record: Any, day: _dt.date | None = None) -> Row:
    """Applies the rules to one parsed record (a JSON object read with :func:`parse`).

    ``day`` is the raw partition the record was read from; a record of another UTC day is
    refused as ``wrong_partition``. Raises :class:`RuleError` with the reason.
    """
    if not isinstance(record, dict):
        raise RuleError("not_object")
    version = record.get("schema_version")
    if version is not None and not (_is_int(version) and version in SCHEMA_VERSIONS):
        raise RuleError("bad_schema_version")
    partition, offset = record.get("kafka_partition"), record.get("kafka_offset")
    if not (_is_int(partition) and 0 <= partition <= _INT32_MAX and _is_int(offset) and 0 <= offset <= _INT64_MAX):
        raise RuleError("missing_lineage")

    symbol = record.get("symbol")
    if symbol is None:
        raise RuleError("missing_symbol")
    if not isinstance(symbol, str):
        raise RuleError("bad_symbol")
    symbol = symbol.strip(SYMBOL_STRIP)
    if not symbol:
        raise RuleError("missing_symbol")
    if len(symbol) > SYMBOL_MAX_LEN or not all(" " <= c <= "~" for c in symbol):
        raise RuleError("bad_symbol")
    symbol = symbol.upper()

    price = _price(record.get("price"))

    trade_ts = record.get("trade_ts")
    if trade_ts is None:
        raise RuleError("missing_time")
    if not _ms(trade_ts):
        raise RuleError("bad_time")

    volume = record.get("volume")
    if volume is not None:
        if not _is_number(volume):
            raise RuleError("bad_volume")
        try:
            volume = float(volume)
        except OverflowError:  # an integer beyond float: as infinite as 1e999
            raise RuleError("bad_volume") from None
        if not (volume >= 0.0 and volume != float("inf")):
            raise RuleError("bad_volume")

    conditions = record.get("conditions")
    if conditions is not None:
        if not isinstance(conditions, list) or not all(
            isinstance(c, str) and CONDITIONS_SEPARATOR not in c for c in conditions
        ):
            raise RuleError("bad_conditions")
        conditions = CONDITIONS_SEPARATOR.join(conditions)

    received_ts = record.get("received_ts")
    if received_ts is not None and not _ms(received_ts):
        raise RuleError("bad_received_ts")

    source = record.get("source")
    if source is not None and not isinstance(source, str):
        raise RuleError("bad_source")

    row = Row(symbol, price, volume, trade_ts, conditions, received_ts, source, partition, offset)
    if day is not None and row.day != day:
        raise RuleError("wrong_partition")
    return row


def parse(line: str | bytes) -> Any:
    """Parses one raw line as the rules read JSON; raises :class:`RuleError` (``not_json``)."""
    try:
        return _loads(line)
    except (ValueError, RecursionError):
        raise RuleError("not_json") from None


def clean_line(line: str | bytes, day: _dt.date | None = None) -> Row | Quarantined:
    """One raw line → a clean :class:`Row` or a :class:`Quarantined` line with its reason."""
    try:
        return clean(parse(line), day)
    except RuleError as e:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        return Quarantined(e.args[0], text)


def day_of_path(path: str) -> _dt.date | None:
    """The raw partition day named by ``.../year=YYYY/month=MM/day=DD/...``, if any."""
    parts = {}
    for seg in path.split("/"):
        key, sep, value = seg.partition("=")
        if sep and key in PARTITION_COLUMNS and value.isdigit():
            parts[key] = int(value)
    if len(parts) != 3:
        return None
    try:
        return _dt.date(parts["year"], parts["month"], parts["day"])
    except ValueError:
        return None


def is_blank(line: str | bytes) -> bool:
    """Lines of only spaces, tabs, CR and LF (a trailing newline) are skipped, not quarantined."""
    if isinstance(line, bytes):
        return not line.strip(b" \t\r\n")
    return not line.strip(" \t\r\n")


def split_lines(body: bytes) -> list[bytes]:
    """The lines of a raw object (gzip or plain), as both engines split them: on LF only."""
    if body[:2] == b"\x1f\x8b":
        import gzip

        body = gzip.decompress(body)
    return body.split(b"\n")


def spec_json() -> str:
    """:data:`SPEC` as compact JSON, the form the Rust engine compares."""
    return json.dumps(SPEC, sort_keys=True, separators=(",", ":"))
