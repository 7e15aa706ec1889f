"""Redshift: loading ``processed.data/`` with ``COPY ... FORMAT AS PARQUET`` and a MERGE on the Kafka
identity, through the Redshift Data API (Redshift Serverless, boto3) or a direct connection
(``redshift_connector``), and running queries there. :mod:`stockpipe.warehouse` chooses it by URI."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stockpipe.aws import aws_credentials, aws_error, s3_client
from stockpipe.config import Config
from stockpipe.exceptions import ConfigError, WarehouseError
from stockpipe.queries import kind, load_statements
from stockpipe.results import LoadStats, Result

if TYPE_CHECKING:
    from stockpipe.warehouse import _File, _Target

log = logging.getLogger("stockpipe")

__all__ = ["RedshiftData", "connect_direct", "load", "manifest_json"]


def manifest_json(files: Sequence[_File]) -> bytes:
    """A COPY manifest naming exactly these files (Parquet needs each one's content_length)."""
    entries = [{"url": f.uri, "mandatory": True, "meta": {"content_length": f.size}} for f in files]
    return json.dumps({"entries": entries}, indent=1).encode()


def load(
    cfg: Config,
    target: _Target,
    lake: str,
    files: list[_File],
    client: Any,
    status: Callable[[str], None] | None = None,
) -> LoadStats:
    """Loads ``files`` (of the S3 ``lake``) in one transaction: a COPY manifest naming exactly them,
    then the statements of :func:`stockpipe.queries.load_statements`."""
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
        s3_client(cfg).put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256")
    except (BotoCoreError, ClientError) as e:
        raise WarehouseError(f"cannot write the COPY manifest to s3://{bucket}/{key}: {aws_error(e)}") from None
    statements = load_statements(
        schema=cfg.warehouse.schema, manifest=f"s3://{bucket}/{key}", iam_role=cfg.warehouse.iam_role or ""
    )
    kinds = [kind(s) for s in statements]
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
    return LoadStats.of_merge("redshift", len(files), rows_in, merged, matched, total)


def _load_direct(target: _Target, statements: list[str], kinds: list[str], schema: str) -> tuple[int, int, int, int]:
    con = connect_direct(target)
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


def search_path(schema: str) -> str | None:
    """The statement that makes an unqualified ``stock_prices`` the table ``load`` writes to
    ``[warehouse] schema``; None for ``public``, where Redshift looks already."""
    return None if schema.lower() == "public" else f"SET search_path TO {schema}, public"


def query_direct(target: _Target, sql: str, schema: str) -> Result:
    """Runs one query over a direct connection, ``stock_prices`` read from ``schema``."""
    con = connect_direct(target)
    try:
        cur = con.cursor()
        setup = search_path(schema)
        if setup:
            cur.execute(setup)
        cur.execute(sql)
        return Result([d[0] for d in cur.description or []], [tuple(r) for r in cur.fetchall()])
    except Exception as e:  # noqa: BLE001 - any driver error becomes one line
        raise WarehouseError(f"Redshift: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        con.close()


def connect_direct(target: _Target) -> Any:
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

    def batch(self, statements: list[str], name: str = "stockpipe-load") -> str:
        """Runs the statements as one transaction; returns the statement id."""
        out = self._call("batch_execute_statement", Sqls=statements, StatementName=name, **self._where())
        return str(out["Id"])

    def wait(self, sid: str, status: Callable[[str], None] | None = None, what: str = "load") -> dict[str, Any]:
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
            msg = f"Redshift {what} {desc['Status'].lower()}: {failed.get('Error') or desc.get('Error', 'no message')}"
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

    def run(self, sql: str, schema: str = "public") -> Result:
        """Runs one statement and returns its rows; ``stock_prices`` is read from ``schema``."""
        setup = search_path(schema)
        if setup is None:
            sid = rows = str(self._call("execute_statement", Sql=sql, **self._where())["Id"])
        else:
            # A statement of the Data API is a session of its own: the search path goes with the query.
            sid = self.batch([setup, sql], name="stockpipe-query")
            rows = f"{sid}:2"
        self.wait(sid, what="query")
        return self.result(rows)

    def result(self, sid: str) -> Result:
        columns: list[str] = []
        types: list[str] = []
        rows: list[tuple[Any, ...]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Id": sid}
            if token:
                kwargs["NextToken"] = token
            page = self._call("get_statement_result", **kwargs)
            meta = page.get("ColumnMetadata", [])
            columns = columns or [c["name"] for c in meta]
            types = types or [c.get("typeName", "") for c in meta]
            rows.extend(_row(rec, types) for rec in page.get("Records", []))
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


def _row(record: list[dict[str, Any]], types: list[str]) -> tuple[Any, ...]:
    return tuple(_field(f, types[i] if i < len(types) else "") for i, f in enumerate(record))


_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(?:([+-]\d\d)(?::?(\d\d))?)?")


def _field(f: dict[str, Any], type_name: str) -> Any:
    """A Data API value as the Python value a direct connection or DuckDB gives for the same column:
    the API sends numerics, timestamps and dates as strings (``typeName`` says which)."""
    if f.get("isNull"):
        return None
    for k in ("longValue", "doubleValue", "booleanValue"):
        if k in f:
            return f[k]
    text = f.get("stringValue")
    if text is None:
        return None
    try:
        if type_name in ("numeric", "decimal"):
            return decimal.Decimal(text)
        if type_name in ("timestamp", "timestamptz"):
            return _timestamp(text)
        if type_name == "date":
            return dt.date.fromisoformat(text)
    except (ValueError, decimal.InvalidOperation):
        pass  # a form this does not know stays the text it was
    return text


def _timestamp(text: str) -> dt.datetime:
    """``2024-03-08 06:35:09.486`` (naive, as TIMESTAMP is) or ``2024-03-08 06:35:09+00`` (aware)."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        raise ValueError(text)
    day, clock, fraction, hours, minutes = m.groups()
    value = dt.datetime.fromisoformat(f"{day} {clock}").replace(microsecond=int((fraction or "0").ljust(6, "0")))
    if hours is None:
        return value
    offset = dt.timedelta(hours=int(hours), minutes=int(minutes or 0) * (-1 if hours[0] == "-" else 1))
    return value.replace(tzinfo=dt.timezone(offset))
