"""Loading ``processed.data/`` into a warehouse, and the analytics queries (``stockpipe load``,
``stockpipe query``).

Warehouses, by URI:

* ``duckdb:///path/to/file.duckdb`` (or ``duckdb://./relative.duckdb``, ``duckdb://:memory:``): the
  embedded default.
* ``redshift://WORKGROUP/DATABASE``: Redshift Serverless through the Redshift Data API (boto3).
* ``redshift://USER:PASSWORD@HOST:PORT/DATABASE``: a direct connection (``redshift_connector``).

The SQL lives in ``sql/`` (Redshift dialect, one copy): ``sql/redshift/schema.sql`` creates
``stock_prices``, ``sql/redshift/load.sql`` stages, counts and MERGEs on the Kafka lineage key so
any load can be rerun without duplicating a row, and ``sql/analytics/*.sql`` are the queries. DuckDB
runs the same load and analytics statements, transpiled by sqlglot.

Example:
    >>> import stockpipe.warehouse as wh
    >>> stats = wh.load("file:///tmp/lake", "duckdb:///tmp/lake.duckdb")  # doctest: +SKIP
    >>> wh.query("ohlcv_minute", "duckdb:///tmp/lake.duckdb").rows[:1]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import html
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from stockpipe import rules
from stockpipe.config import (
    LAKE_URI_EXPECTED,
    Config,
    aws_credentials,
    aws_error,
    is_lake_uri,
    load_config,
    local_lake_problem,
    s3_client,
    warehouse_uri_problem,
)
from stockpipe.exceptions import ConfigError, WarehouseError

log = logging.getLogger("stockpipe")

__all__ = [
    "ANALYTICS",
    "LoadStats",
    "Result",
    "analytics_sql",
    "load",
    "load_statements",
    "query",
]

SQL_DIR = Path(__file__).with_name("sql")
_BARS = {"ohlcv_minute": "minute", "ohlcv_hour": "hour", "ohlcv_day": "day"}
"""One bar query (``sql/analytics/ohlcv.sql``) at three bucket sizes."""
ANALYTICS = tuple(sorted({p.stem for p in (SQL_DIR / "analytics").glob("*.sql")} - {"ohlcv"} | set(_BARS)))
"""Names ``stockpipe query`` accepts: the files in ``sql/analytics/`` and the three bar sizes."""


@dataclass(frozen=True, kw_only=True)
class LoadStats:
    """What one load did."""

    warehouse: str
    files: int
    rows_in: int
    inserted: int
    updated: int
    total_rows: int

    def summary(self) -> str:
        return (
            f"files {self.files}, rows read {self.rows_in}, inserted {self.inserted}, updated {self.updated}, "
            f"rows in stock_prices {self.total_rows}"
        )


@dataclass(frozen=True)
class Result:
    """A query's column names and rows; a notebook shows it as a table, ``to_pandas()`` makes a DataFrame."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def to_pandas(self) -> Any:
        import pandas as pd  # type: ignore[import-untyped]

        return pd.DataFrame.from_records(self.rows, columns=self.columns)

    def __len__(self) -> int:
        return len(self.rows)

    def _numeric(self) -> list[bool]:
        # Numbers are right-aligned, so their digits line up; everything else reads from the left.
        return [
            any(v is not None for v in col) and all(v is None or _is_number(v) for v in col)
            for col in zip(*self.rows, strict=True)
        ] or [False] * len(self.columns)

    def _repr_html_(self, max_rows: int = 50) -> str:
        """A notebook shows a result as a table (the first ``max_rows`` rows), numbers right-aligned."""
        numeric = self._numeric()

        def cell(tag: str, value: str, right: bool) -> str:
            style = ' style="text-align:right"' if right else ""
            return f"<{tag}{style}>{html.escape(value)}</{tag}>"

        head = "".join(cell("th", c, num) for c, num in zip(self.columns, numeric, strict=True))
        body = "".join(
            "<tr>" + "".join(cell("td", _text(v), num) for v, num in zip(r, numeric, strict=True)) + "</tr>"
            for r in self.rows[:max_rows]
        )
        more = len(self.rows) - max_rows
        note = f"<p>… {more} more rows ({len(self.rows)} in all)</p>" if more > 0 else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"

    def format(self, kind: str = "table") -> str:
        if kind == "json":
            return "\n".join(json.dumps(dict(zip(self.columns, map(_plain, r), strict=True))) for r in self.rows)
        if kind == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(self.columns)
            w.writerows([[_text(v) for v in r] for r in self.rows])
            return buf.getvalue().rstrip("\n")
        cells = [self.columns, *[[_text(v) for v in r] for r in self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        numeric = self._numeric()
        lines = [
            " | ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)
            ).rstrip()
            for row in cells
        ]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)


def _plain(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return f"{v:f}"
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    return v


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, float):
        return f"{v:.10g}"
    if isinstance(v, decimal.Decimal):
        return f"{v:f}"
    return str(v)


# ---------------------------------------------------------------- SQL from sql/


def _statements(text: str) -> list[str]:
    """Splits a SQL file into statements (no trailing semicolon), dropping ``--`` comments (the
    files in ``sql/`` keep ``--`` and ``;`` out of string literals)."""
    body = "\n".join(line.split("--", 1)[0].rstrip() for line in text.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]


def load_statements(*, schema: str, manifest: str, iam_role: str) -> list[str]:
    """The Redshift statements of one load: create the table if missing, stage, COPY, count, MERGE."""
    create = (SQL_DIR / "redshift/schema.sql").read_text()
    load_sql = (SQL_DIR / "redshift/load.sql").read_text()
    values = {"schema": schema, "manifest": manifest, "iam_role": iam_role}
    return [*_statements(create.format(**values)), *_statements(load_sql.format(**values))]


def analytics_sql(name: str, dialect: str = "redshift") -> str:
    """The analytics query ``name`` (see :data:`ANALYTICS`) in ``dialect`` (``redshift`` or ``duckdb``)."""
    if name not in ANALYTICS:
        raise ConfigError(f"unknown query {name!r}: expected SQL or one of {', '.join(ANALYTICS)}")
    if name in _BARS:
        text = (SQL_DIR / "analytics/ohlcv.sql").read_text().replace("{unit}", _BARS[name])
    else:
        text = (SQL_DIR / "analytics" / f"{name}.sql").read_text()
    return text if dialect == "redshift" else _transpile(text, dialect)


def _transpile(sql: str, dialect: str) -> str:
    import sqlglot

    try:
        out = sqlglot.transpile(sql, read="redshift", write=dialect)
    except sqlglot.errors.ParseError as e:
        raise ConfigError(f"SQL does not parse as Redshift SQL: {str(e).splitlines()[0]}") from None
    if len(out) != 1:
        raise ConfigError("expected exactly one SQL statement")
    if not (out[0] or "").strip():
        raise ConfigError(f"no SQL statement in {sql!r}")
    return out[0]


# ---------------------------------------------------------------- warehouse URIs


@dataclass(frozen=True)
class _Target:
    kind: str  # duckdb, redshift-data, redshift-direct
    path: str = ""
    workgroup: str = ""
    database: str = ""
    host: str = ""
    port: int = 5439
    user: str = ""
    password: str = ""
    region: str | None = None


def _target(uri: str) -> _Target:
    if problem := warehouse_uri_problem(uri):
        raise ConfigError(f"[warehouse] warehouse = {_redact_uri(uri)!r}: {problem}")
    if uri.startswith("duckdb://"):
        return _Target("duckdb", path=uri[len("duckdb://") :])
    u = urlsplit(uri)
    database = u.path.strip("/")
    region = parse_qs(u.query).get("region", [None])[0]
    host = u.hostname or ""  # present: checked above
    if u.username:
        return _Target(
            "redshift-direct",
            database=database,
            host=host,
            port=u.port or 5439,
            user=unquote(u.username),
            password=unquote(u.password or ""),
            region=region,
        )
    return _Target("redshift-data", workgroup=host, database=database, region=region)


def _redact_uri(uri: str) -> str:
    u = urlsplit(uri)
    if u.password:
        return uri.replace(":" + u.password + "@", ":***@")
    return uri


# ---------------------------------------------------------------- processed files


@dataclass(frozen=True)
class _File:
    uri: str
    size: int


def _selected(key: str, date: str | None, since: str | None) -> bool:
    day = rules.day_of_path(key)
    if day is None or not key.endswith(".parquet"):
        return False
    return (date is None or day.isoformat() == date) and (since is None or day.isoformat() >= since)


def _processed_files(cfg: Config, lake: str, date: str | None, since: str | None) -> list[_File]:
    prefix = cfg.transform.processed_prefix
    if lake.startswith("file://"):
        root = Path(lake[len("file://") :])
        base = root / prefix
        files = [
            _File(str(p), p.stat().st_size)
            for p in sorted(base.glob("year=*/month=*/day=*/*.parquet"))
            if _selected(str(p.relative_to(root)), date, since)
        ]
        return files
    if lake.startswith("s3://"):
        bucket, _, key_prefix = lake[len("s3://") :].partition("/")
        key_base = f"{key_prefix.strip('/')}/{prefix}/" if key_prefix.strip("/") else f"{prefix}/"
        from botocore.exceptions import BotoCoreError, ClientError

        out = []
        try:
            for page in _s3(cfg).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_base):
                for obj in page.get("Contents", []):
                    if _selected(obj["Key"][len(key_base) - len(prefix) - 1 :], date, since):
                        out.append(_File(f"s3://{bucket}/{obj['Key']}", int(obj["Size"])))
        except (BotoCoreError, ClientError) as e:
            raise WarehouseError(f"cannot list s3://{bucket}/{key_base}: {aws_error(e)}") from None
        return sorted(out, key=lambda f: f.uri)
    raise ConfigError(f"--input {lake!r}: {LAKE_URI_EXPECTED}")


def _s3(cfg: Config) -> Any:
    return s3_client(cfg)


# ---------------------------------------------------------------- load


def load(
    input: str | None = None,
    warehouse: str | None = None,
    *,
    date: str | None = None,
    since: str | None = None,
    config: Config | None = None,
    redshift_data_client: Any = None,
    status: Callable[[str], None] | None = None,
) -> LoadStats:
    """Loads the processed Parquet under ``input`` into ``stock_prices``; rerunnable.

    Args:
        input: the lake holding ``processed.data/`` (default ``[warehouse] input``, else
            ``[transform] output``).
        warehouse: a warehouse URI (default ``[warehouse] warehouse``).
        date, since: only files of this UTC day / of this day and later.
        redshift_data_client: a boto3 ``redshift-data`` client to use (default: built from the config).
        status: called with a line of progress: files fetched from S3 for DuckDB, the statement
            Redshift is running.

    Interrupted (Ctrl-C) while Redshift runs the load, the statement is cancelled: the load is one
    transaction, so none of it stays, and running it again loads everything.

    Raises:
        ConfigError: a bad setting, or a ``file://`` input that is not an existing directory.
    """
    from stockpipe.etl import check_days

    date, since = check_days(date, since)
    cfg = config if config is not None else load_config()
    lake = input or cfg.warehouse.input or cfg.transform.output
    if not is_lake_uri(lake):
        raise ConfigError(f"--input {lake!r}: {LAKE_URI_EXPECTED}")
    target = _target(warehouse or cfg.warehouse.warehouse)
    problem = local_lake_problem(lake)
    if problem is not None:
        raise ConfigError(f"--input {lake!r}: {problem}")
    if target.kind == "duckdb":
        return _load_duckdb(cfg, target, _processed_files(cfg, lake, date, since), status)
    if not lake.startswith("s3://"):
        raise ConfigError(f"--input {lake!r}: Redshift COPY reads from S3; load an s3:// lake")
    if not cfg.warehouse.iam_role:
        raise ConfigError(
            "[warehouse] iam_role is not set: the IAM role ARN Redshift assumes to read S3 (--iam-role arn:aws:iam::…)"
        )
    files = _processed_files(cfg, lake, date, since)
    return _load_redshift(cfg, target, lake, files, redshift_data_client, status)


def _duckdb(target: _Target, *, read_only: bool = False) -> Any:
    import duckdb

    in_memory = target.path == ":memory:"
    if not in_memory:
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(target.path, read_only=read_only and not in_memory)
    except duckdb.Error as e:
        reason = str(e).splitlines()[0].split(" See also ")[0]
        hint = " (another process has it open: a notebook, a query or a load)" if "lock" in reason else ""
        raise WarehouseError(f"cannot open the DuckDB warehouse {target.path}{hint}: {reason}") from None
    con.execute("SET TimeZone = 'UTC'")
    return con


def _load_duckdb(
    cfg: Config, target: _Target, files: list[_File], status: Callable[[str], None] | None = None
) -> LoadStats:
    import duckdb

    statements = load_statements(schema="main", manifest="", iam_role="")
    by_kind = {_kind(s): s for s in statements}
    con = _duckdb(target)
    try:
        con.execute((SQL_DIR / "duckdb/schema.sql").read_text())
        if not files:
            total = con.execute("SELECT COUNT(*) FROM stock_prices").fetchone()[0]
            return LoadStats(warehouse="duckdb", files=0, rows_in=0, inserted=0, updated=0, total_rows=total)
        with tempfile.TemporaryDirectory(prefix="stockpipe-load-") as tmp:
            paths = list(_local_copies(cfg, files, Path(tmp), status))
            cols = ", ".join(
                f"CAST({n} AS TIMESTAMP) AS {n}" if t == "timestamp_ms_utc" else n for n, t in rules.COLUMNS
            )
            con.execute("BEGIN")
            con.execute(
                f"CREATE TEMP TABLE stock_prices_staging AS SELECT {cols} "
                "FROM read_parquet(?, hive_partitioning = false)",
                [paths],
            )
            rows_in = con.execute("SELECT COUNT(*) FROM stock_prices_staging").fetchone()[0]
            matched = con.execute(_transpile(by_kind["select"], "duckdb")).fetchone()[0]
            con.execute(_transpile(by_kind["merge"], "duckdb"))
            con.execute("DROP TABLE stock_prices_staging")
            con.execute("COMMIT")
        total = con.execute("SELECT COUNT(*) FROM stock_prices").fetchone()[0]
        return LoadStats(
            warehouse="duckdb",
            files=len(files),
            rows_in=rows_in,
            inserted=rows_in - matched,
            updated=matched,
            total_rows=total,
        )
    except duckdb.Error as e:
        raise WarehouseError(f"DuckDB load failed: {str(e).splitlines()[0]}") from None
    finally:
        con.close()


def _kind(statement: str) -> str:
    return statement.split(None, 1)[0].lower()


def _local_copies(
    cfg: Config, files: list[_File], tmp: Path, status: Callable[[str], None] | None = None
) -> Iterator[str]:
    s3 = None
    reported = time.monotonic()
    for i, f in enumerate(files):
        if not f.uri.startswith("s3://"):
            yield f.uri
            continue
        if status and time.monotonic() - reported >= 1.0:  # once a second, after the first
            reported = time.monotonic()
            status(f"load: fetching file {i + 1} of {len(files)} from S3")
        s3 = s3 or _s3(cfg)
        bucket, _, key = f.uri[len("s3://") :].partition("/")
        local = tmp / f"{i:06}.parquet"
        s3.download_file(bucket, key, str(local))
        yield str(local)


# ---------------------------------------------------------------- Redshift


def manifest_json(files: Sequence[_File]) -> bytes:
    """A COPY manifest naming exactly these files (Parquet needs each one's content_length)."""
    entries = [{"url": f.uri, "mandatory": True, "meta": {"content_length": f.size}} for f in files]
    return json.dumps({"entries": entries}, indent=1).encode()


def _load_redshift(
    cfg: Config,
    target: _Target,
    lake: str,
    files: list[_File],
    client: Any,
    status: Callable[[str], None] | None = None,
) -> LoadStats:
    if not files:
        raise WarehouseError(
            f"no Parquet files under {lake}/{cfg.transform.processed_prefix}/: run stockpipe etl first"
        )
    body = manifest_json(files)
    digest = hashlib.sha256(body).hexdigest()[:16]
    bucket, _, key_prefix = lake[len("s3://") :].partition("/")
    key = f"{key_prefix.strip('/') + '/' if key_prefix.strip('/') else ''}_loads/manifest-{digest}.json"
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3(cfg).put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256")
    except (BotoCoreError, ClientError) as e:
        raise WarehouseError(f"cannot write the COPY manifest to s3://{bucket}/{key}: {aws_error(e)}") from None
    statements = load_statements(
        schema=cfg.warehouse.schema, manifest=f"s3://{bucket}/{key}", iam_role=cfg.warehouse.iam_role or ""
    )
    kinds = [_kind(s) for s in statements]
    rows_in = 0
    if target.kind == "redshift-data":
        api = RedshiftData(cfg, target, client)
        desc = api.wait(api.batch(statements), status)
        subs = desc.get("SubStatements", [])
        matched = int(api.result(subs[kinds.index("select")]["Id"]).rows[0][0])
        merged = int(subs[kinds.index("merge")].get("ResultRows", 0))
        rows_in = int(subs[kinds.index("copy")].get("ResultRows", 0))
        total = int(api.run(f"SELECT COUNT(*) FROM {cfg.warehouse.schema}.stock_prices").rows[0][0])
    else:
        matched, merged, rows_in, total = _load_direct(target, statements, kinds, cfg.warehouse.schema)
    return LoadStats(
        warehouse="redshift",
        files=len(files),
        rows_in=rows_in,
        inserted=merged - matched,
        updated=matched,
        total_rows=total,
    )


def _load_direct(target: _Target, statements: list[str], kinds: list[str], schema: str) -> tuple[int, int, int, int]:
    con = _connect_direct(target)
    try:
        cur = con.cursor()
        matched = merged = rows_in = 0
        for sql, kind in zip(statements, kinds, strict=True):
            cur.execute(sql)
            if kind == "select":
                matched = int(cur.fetchone()[0])
            elif kind == "merge":
                merged = int(cur.rowcount)
            elif kind == "copy":
                rows_in = int(cur.rowcount)
        con.commit()
        cur.execute(f"SELECT COUNT(*) FROM {schema}.stock_prices")
        total = int(cur.fetchone()[0])
        return matched, merged, rows_in, total
    except Exception as e:  # noqa: BLE001 - any driver error: roll back, then one line
        con.rollback()
        raise WarehouseError(f"Redshift load failed and was rolled back: {e}") from None
    finally:
        con.close()


def _connect_direct(target: _Target) -> Any:
    try:
        import redshift_connector  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(
            "a direct Redshift connection needs redshift_connector: pip install redshift-connector"
        ) from None
    try:
        return redshift_connector.connect(
            host=target.host, port=target.port, database=target.database, user=target.user, password=target.password
        )
    except Exception as e:  # noqa: BLE001 - any driver error becomes one line
        raise WarehouseError(f"cannot connect to Redshift at {target.host}:{target.port}: {e}") from None


class RedshiftData:
    """The few Redshift Data API calls the loader needs, with clear errors."""

    TERMINAL = ("FINISHED", "FAILED", "ABORTED")

    def __init__(self, cfg: Config, target: _Target, client: Any = None, poll_s: float | None = None) -> None:
        import boto3

        self.region = target.region or cfg.warehouse.region or cfg.s3.region
        self.target = target
        self.poll_s = cfg.warehouse.poll_seconds if poll_s is None else poll_s
        self.client = client or boto3.client("redshift-data", region_name=self.region, **aws_credentials(cfg))

    def _call(self, op: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            return getattr(self.client, op)(**kwargs)
        except EndpointConnectionError:
            raise WarehouseError(
                f"cannot reach the Redshift Data API in region {self.region!r}: check [warehouse] region"
            ) from None
        except ClientError as e:
            err = e.response.get("Error", {})
            msg = f"Redshift Data API {op}: {err.get('Code', 'error')}: {err.get('Message', '')}"
            if "not found" in str(err.get("Message", "")).lower():
                msg += (
                    f" (workgroup {self.target.workgroup!r}, database {self.target.database!r}, "
                    f"region {self.region!r}: check [warehouse] region)"
                )
            raise WarehouseError(msg) from None
        except BotoCoreError as e:
            raise WarehouseError(f"Redshift Data API {op}: {aws_error(e)}") from None

    def _where(self) -> dict[str, str]:
        return {"WorkgroupName": self.target.workgroup, "Database": self.target.database}

    def batch(self, statements: list[str]) -> str:
        """Runs the statements as one transaction; returns the statement id."""
        out = self._call("batch_execute_statement", Sqls=statements, StatementName="stockpipe-load", **self._where())
        return str(out["Id"])

    def wait(self, sid: str, status: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Follows the statement to its end; an interrupt cancels it (its transaction rolls back)."""
        started = time.monotonic()
        try:
            while True:
                desc: dict[str, Any] = self._call("describe_statement", Id=sid)
                if desc["Status"] in self.TERMINAL:
                    break
                if status:
                    status(_running(desc, time.monotonic() - started))
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self.cancel(sid)
            raise
        if desc["Status"] != "FINISHED":
            failed = next((s for s in desc.get("SubStatements", []) if s.get("Status") == "FAILED"), desc)
            text = failed.get("QueryString", "")
            msg = f"Redshift load {desc['Status'].lower()}: {failed.get('Error') or desc.get('Error', 'no message')}"
            if text.upper().startswith("COPY"):
                details = self.load_errors()
                if details:
                    msg += "\n" + "\n".join(details)
            raise WarehouseError(msg)
        return desc

    def cancel(self, sid: str) -> None:
        try:
            self._call("cancel_statement", Id=sid)
        except WarehouseError as e:
            log.warning("interrupted: could not cancel Redshift statement %s, it may still be running: %s", sid, e)
        else:
            log.warning("interrupted: cancelled Redshift statement %s; nothing of it is committed", sid)

    def load_errors(self) -> list[str]:
        """The newest lines of ``sys_load_error_detail`` (why COPY refused which file and line)."""
        try:
            res = self.run(
                "SELECT file_name, line_number, column_name, error_code, error_message "
                "FROM sys_load_error_detail ORDER BY start_time DESC LIMIT 5"
            )
        except WarehouseError:
            return []
        return [" | ".join("" if v is None else str(v) for v in r) for r in res.rows]

    def run(self, sql: str) -> Result:
        out = self._call("execute_statement", Sql=sql, **self._where())
        self.wait(str(out["Id"]))
        return self.result(str(out["Id"]))

    def result(self, sid: str) -> Result:
        columns: list[str] = []
        rows: list[tuple[Any, ...]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Id": sid}
            if token:
                kwargs["NextToken"] = token
            page = self._call("get_statement_result", **kwargs)
            columns = columns or [c["name"] for c in page.get("ColumnMetadata", [])]
            rows.extend(tuple(_field(f) for f in rec) for rec in page.get("Records", []))
            token = page.get("NextToken")
            if not token:
                return Result(columns, rows)


def _running(desc: dict[str, Any], seconds: float) -> str:
    """What a statement in progress is doing: for a batch, which of its statements runs."""
    subs = desc.get("SubStatements") or []
    current = next(((i, s) for i, s in enumerate(subs) if s.get("Status") != "FINISHED"), None)
    if current is None:
        return f"redshift: {desc['Status'].lower()} | {seconds:.0f} s"
    i, sub = current
    kind = (sub.get("QueryString") or "?").split(None, 1)[0].upper()
    return f"redshift: statement {i + 1} of {len(subs)} ({kind}) {sub.get('Status', '?').lower()} | {seconds:.0f} s"


def _field(f: dict[str, Any]) -> Any:
    if f.get("isNull"):
        return None
    for k in ("longValue", "doubleValue", "booleanValue", "stringValue"):
        if k in f:
            return f[k]
    return None


# ---------------------------------------------------------------- query


def query(sql_or_name: str, warehouse: str | None = None, *, config: Config | None = None) -> Result:
    """Runs an analytics query by name (see :data:`ANALYTICS`) or a Redshift-dialect SQL text."""
    if not sql_or_name.strip():
        raise ConfigError(f"no query given: expected SQL or one of {', '.join(ANALYTICS)}")
    cfg = config if config is not None else load_config()
    target = _target(warehouse or cfg.warehouse.warehouse)
    is_name = sql_or_name in ANALYTICS or (sql_or_name.isidentifier() and " " not in sql_or_name)
    text = analytics_sql(sql_or_name) if is_name else sql_or_name
    if target.kind == "duckdb":
        import duckdb

        if target.path != ":memory:" and not Path(target.path).exists():
            raise ConfigError(f"no DuckDB warehouse at {target.path}: run stockpipe load first")
        # Analytics only read: a stray DROP or DELETE cannot touch the loaded rows.
        con = _duckdb(target, read_only=True)
        try:
            cur = con.execute(_transpile(text, "duckdb"))
            return Result([d[0] for d in cur.description], [tuple(r) for r in cur.fetchall()])
        except duckdb.Error as e:
            raise WarehouseError(f"DuckDB: {str(e).splitlines()[0]}") from None
        finally:
            con.close()
    if target.kind == "redshift-data":
        return RedshiftData(cfg, target).run(text)
    con = _connect_direct(target)
    try:
        cur = con.cursor()
        cur.execute(text)
        return Result([d[0] for d in cur.description], [tuple(r) for r in cur.fetchall()])
    finally:
        con.close()
