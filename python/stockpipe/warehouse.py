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
runs the same load and analytics statements, transpiled by sqlglot (:mod:`stockpipe.queries`); the
Redshift side is :mod:`stockpipe.redshift`, and both return :mod:`stockpipe.results`.

Example:
    >>> import stockpipe.warehouse as wh
    >>> stats = wh.load("file:///tmp/lake", "duckdb:///tmp/lake.duckdb")  # doctest: +SKIP
    >>> wh.query("ohlcv_minute", "duckdb:///tmp/lake.duckdb").rows[:1]  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from stockpipe import redshift, rules
from stockpipe.aws import aws_error, s3_client
from stockpipe.config import Config, load_config
from stockpipe.exceptions import ConfigError, WarehouseError
from stockpipe.queries import ANALYTICS, SQL_DIR, analytics_sql, kind, load_statements, transpile
from stockpipe.results import LoadStats, Result
from stockpipe.uris import LAKE_URI_EXPECTED, is_lake_uri, local_lake_problem, warehouse_uri_problem

__all__ = [
    "ANALYTICS",
    "LoadStats",
    "Result",
    "analytics_sql",
    "load",
    "load_statements",
    "query",
]


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
            for page in s3_client(cfg).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_base):
                for obj in page.get("Contents", []):
                    if _selected(obj["Key"][len(key_base) - len(prefix) - 1 :], date, since):
                        out.append(_File(f"s3://{bucket}/{obj['Key']}", int(obj["Size"])))
        except (BotoCoreError, ClientError) as e:
            raise WarehouseError(f"cannot list s3://{bucket}/{key_base}: {aws_error(e)}") from None
        return sorted(out, key=lambda f: f.uri)
    raise ConfigError(f"--input {lake!r}: {LAKE_URI_EXPECTED}")


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
    return redshift.load(cfg, target, lake, files, redshift_data_client, status)


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
    by_kind = {kind(s): s for s in statements}
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
            matched = con.execute(transpile(by_kind["select"], "duckdb")).fetchone()[0]
            con.execute(transpile(by_kind["merge"], "duckdb"))
            con.execute("DROP TABLE stock_prices_staging")
            con.execute("COMMIT")
        total = con.execute("SELECT COUNT(*) FROM stock_prices").fetchone()[0]
        # Every staged row is merged: matched ones update, the rest insert.
        return LoadStats.of_merge("duckdb", len(files), rows_in, rows_in, matched, total)
    except duckdb.Error as e:
        raise WarehouseError(f"DuckDB load failed: {str(e).splitlines()[0]}") from None
    finally:
        con.close()


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
        s3 = s3 or s3_client(cfg)
        bucket, _, key = f.uri[len("s3://") :].partition("/")
        local = tmp / f"{i:06}.parquet"
        s3.download_file(bucket, key, str(local))
        yield str(local)


# ---------------------------------------------------------------- query


def query(
    sql_or_name: str,
    warehouse: str | None = None,
    *,
    config: Config | None = None,
    redshift_data_client: Any = None,
) -> Result:
    """Runs an analytics query by name (see :data:`ANALYTICS`) or a Redshift-dialect SQL text.

    In Redshift, an unqualified ``stock_prices`` is the one ``load`` writes to ``[warehouse] schema``.
    ``redshift_data_client`` is a boto3 ``redshift-data`` client to use (default: built from the config).
    """
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
            cur = con.execute(transpile(text, "duckdb"))
            return Result([d[0] for d in cur.description], [tuple(r) for r in cur.fetchall()])
        except duckdb.Error as e:
            raise WarehouseError(f"DuckDB: {str(e).splitlines()[0]}") from None
        finally:
            con.close()
    if target.kind == "redshift-data":
        return redshift.RedshiftData(cfg, target, redshift_data_client).run(text, cfg.warehouse.schema)
    return redshift.query_direct(target, text, cfg.warehouse.schema)
