"""Warehouse: idempotent DuckDB loads, the analytics queries on a small hand-checked data set, the
Redshift SQL (parsed as Redshift) and the exact Data API requests of a Redshift load."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from stockpipe import load_config, redshift, warehouse
from stockpipe.exceptions import ConfigError, WarehouseError

from .conftest import Stack, cli, no_aws_credentials
from .transform_helpers import write_raw

D = dt.date(2024, 1, 2)


def ts(hh: int, mm: int, ss: int) -> int:
    return int(dt.datetime(2024, 1, 2, hh, mm, ss, tzinfo=dt.timezone.utc).timestamp() * 1000)


#: (symbol, price, volume, time, partition, offset): small enough to check every query by hand.
TRADES = [
    ("A", "10.0", 1, ts(10, 0, 5), 0, 0),
    ("A", "12.0", 3, ts(10, 0, 30), 0, 1),
    ("A", "11.0", 1, ts(10, 0, 50), 0, 2),
    ("A", "11.5", 2, ts(10, 1, 10), 0, 3),
    ("A", "13.0", 2, ts(10, 3, 0), 0, 4),
    ("B", "100", 1, ts(10, 0, 0), 1, 0),
    ("B", "90", 1, ts(10, 0, 40), 1, 1),
]


def fixed_lake(root: Path) -> Path:
    folder = root / "raw.data/year=2024/month=01/day=02"
    folder.mkdir(parents=True)
    lines = [
        f'{{"symbol":"{s}","price":{p},"volume":{v},"trade_ts":{t},"conditions":["1"],"received_ts":{t + 2},'
        f'"source":"finnhub","schema_version":1,"kafka_partition":{kp},"kafka_offset":{ko}}}'
        for s, p, v, t, kp, ko in TRADES
    ]
    (folder / "stock-data+0+0-6.jsonl").write_text("\n".join(lines) + "\n")
    cfg = load_config(env={}, use_default_file=False)
    cfg.transform = dataclasses.replace(cfg.transform, input=f"file://{root}", output=f"file://{root}")
    import stockpipe

    assert stockpipe.transform(config=cfg).rows == len(TRADES)
    return root


@pytest.fixture
def fixed_db(tmp_path: Path) -> str:
    lake = fixed_lake(tmp_path / "lake")
    uri = f"duckdb://{tmp_path}/fixed.duckdb"
    stats = warehouse.load(f"file://{lake}", uri, config=load_config(env={}, use_default_file=False))
    assert (stats.inserted, stats.updated, stats.total_rows) == (len(TRADES), 0, len(TRADES))
    return uri


def q(name: str, uri: str) -> list[tuple[Any, ...]]:
    return warehouse.query(name, uri, config=load_config(env={}, use_default_file=False)).rows


def at(hh: int, mm: int) -> dt.datetime:
    return dt.datetime(2024, 1, 2, hh, mm)


def dec(x: str) -> Decimal:
    return Decimal(x).quantize(Decimal("1e-8"))


def test_ohlcv_bars(fixed_db: str) -> None:
    assert q("ohlcv_minute", fixed_db) == [
        ("A", at(10, 0), dec("10"), dec("12"), dec("10"), dec("11"), 5.0, 3, 11.4),
        ("A", at(10, 1), dec("11.5"), dec("11.5"), dec("11.5"), dec("11.5"), 2.0, 1, 11.5),
        ("A", at(10, 3), dec("13"), dec("13"), dec("13"), dec("13"), 2.0, 1, 13.0),
        ("B", at(10, 0), dec("100"), dec("100"), dec("90"), dec("90"), 2.0, 2, 95.0),
    ]
    # Over the hour: 106 / 9 = 11.777…
    hour = [("A", at(10, 0), dec("10"), dec("13"), dec("10"), dec("13"), 9.0, 5, 11.77777778)]
    hour.append(("B", at(10, 0), dec("100"), dec("100"), dec("90"), dec("90"), 2.0, 2, 95.0))
    assert q("ohlcv_hour", fixed_db) == hour
    assert q("ohlcv_day", fixed_db) == [(s, at(0, 0), *rest) for s, _, *rest in hour]


def test_vwap_moving_average_volatility(fixed_db: str) -> None:
    assert q("vwap", fixed_db) == [
        ("A", at(0, 0), 11.77777778, 11.5, 9.0, 5),
        ("B", at(0, 0), 95.0, 95.0, 2.0, 2),
    ]
    assert q("moving_average", fixed_db) == [
        ("A", at(10, 0), 11.0, 11.0, 11.0),
        ("A", at(10, 1), 11.5, 11.25, 11.25),
        ("A", at(10, 3), 13.0, 11.83333333, 11.83333333),
        ("B", at(10, 0), 90.0, 90.0, 90.0),
    ]
    r1, r2 = math.log(11.5 / 11), math.log(13 / 11.5)
    vol = q("volatility", fixed_db)
    assert [(s, d, n) for s, d, n, _ in vol] == [("A", at(0, 0), 2), ("B", at(0, 0), 0)]
    assert vol[0][3] == pytest.approx(abs(r1 - r2) / math.sqrt(2), abs=1e-9)
    assert vol[1][3] is None


def test_a_result_shows_as_a_table_in_a_notebook(fixed_db: str) -> None:
    from html.parser import HTMLParser

    result = warehouse.query("vwap", fixed_db, config=load_config(env={}, use_default_file=False))

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.right: set[str] = set()
            self.tag = ""

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tag = tag
            if tag == "tr":
                self.rows.append([])
            if tag in ("th", "td"):
                self.rows[-1].append("")
                if ("style", "text-align:right") in attrs and tag == "th":
                    self.right.add(str(len(self.rows[-1]) - 1))

        def handle_data(self, data: str) -> None:
            if self.tag in ("th", "td") and self.rows:
                self.rows[-1][-1] += data

    page = Cells()
    page.feed(result._repr_html_())
    assert len(result) == 2
    assert page.rows[0] == result.columns
    assert page.rows[1][:3] == ["A", "2024-01-02 00:00:00", "11.77777778"]
    assert {result.columns[int(i)] for i in page.right} == {"vwap", "avg_price", "volume", "trades"}
    many = warehouse.Result(columns=["s"], rows=[("<b>",)] * 60)
    shown = many._repr_html_()
    assert shown.count("<tr>") == 51 and "&lt;b&gt;" in shown and "10 more rows (60 in all)" in shown


def test_top_movers_and_gaps(fixed_db: str) -> None:
    assert q("top_movers", fixed_db) == [
        ("A", dec("10"), dec("13"), 30.0),
        ("B", dec("100"), dec("90"), -10.0),
    ]
    assert q("gaps", fixed_db) == [
        ("A", dt.datetime(2024, 1, 2, 10, 1, 10), dt.datetime(2024, 1, 2, 10, 3), 110),
    ]


def test_feed_latency_percentiles(tmp_path: Path) -> None:
    """received_ts - trade_ts per symbol and minute, percentiles interpolated as Redshift's PERCENTILE_CONT."""
    folder = tmp_path / "lake/raw.data/year=2024/month=01/day=02"
    folder.mkdir(parents=True)
    # A: five trades in one minute, reaching stockpipe 1, 2, 3, 4 and 100 ms late; one more the next minute.
    late = [("A", ts(10, 0, i), ms) for i, ms in enumerate((4, 1, 100, 3, 2))] + [("A", ts(10, 1, 0), 7)]
    late.append(("B", ts(10, 0, 30), 0))
    lines = [
        f'{{"symbol":"{s}","price":1,"volume":1,"trade_ts":{t},"conditions":[],"received_ts":{t + ms},'
        f'"source":"finnhub","schema_version":1,"kafka_partition":0,"kafka_offset":{i}}}'
        for i, (s, t, ms) in enumerate(late)
    ]
    (folder / "stock-data+0+0-6.jsonl").write_text("\n".join(lines) + "\n")
    cfg = load_config(env={}, use_default_file=False)
    lake = f"file://{tmp_path / 'lake'}"
    cfg.transform = dataclasses.replace(cfg.transform, input=lake, output=lake)
    import stockpipe

    assert stockpipe.transform(config=cfg).rows == len(late)
    db = f"duckdb://{tmp_path}/w.duckdb"
    warehouse.load(lake, db, config=cfg)
    # p99 of 1, 2, 3, 4, 100: position 0.99 × 4 = 3.96, so 4 + 0.96 × (100 - 4).
    assert q("feed_latency", db) == [
        ("A", at(10, 0), 5, 3.0, pytest.approx(96.16), 100.0),
        ("A", at(10, 1), 1, 7.0, 7.0, 7.0),
        ("B", at(10, 0), 1, 0.0, 0.0, 0.0),
    ]


def test_loading_the_same_parquet_twice_keeps_the_row_count(tmp_path: Path) -> None:
    import stockpipe

    raw = write_raw(tmp_path, clean_per_day=2000, objects_per_day=3)
    uri = f"file://{tmp_path}"
    cfg = load_config(env={}, use_default_file=False)
    cfg.transform = dataclasses.replace(cfg.transform, input=uri, output=uri)
    stockpipe.transform(config=cfg)
    db = f"duckdb://{tmp_path}/w.duckdb"
    first = json.loads(cli("load", "--input", uri, "--warehouse", db, "--json").stdout)
    assert (first["inserted"], first["updated"], first["total_rows"]) == (raw.clean, 0, raw.clean)
    second = json.loads(cli("load", "--input", uri, "--warehouse", db, "--json").stdout)
    assert (second["inserted"], second["updated"], second["total_rows"]) == (0, raw.clean, raw.clean)
    one_day = json.loads(cli("load", "--input", uri, "--warehouse", db, "--date", "2024-03-09", "--json").stdout)
    assert one_day["files"] == 1 and one_day["total_rows"] == raw.clean
    out = cli("query", "select count(*) as n from stock_prices", "--warehouse", db, "--format", "json").stdout
    assert json.loads(out) == {"n": raw.clean}
    csv = cli("query", "vwap", "--warehouse", db, "--format", "csv").stdout.splitlines()
    assert csv[0] == "symbol,day,vwap,avg_price,volume,trades" and len(csv) > 2
    for statement in ("drop table stock_prices", "delete from stock_prices"):
        refused = cli("query", statement, "--warehouse", db, check=False)
        assert refused.returncode == 1 and "read-only mode" in refused.stderr, refused.stderr
    out = cli("query", "select count(*) as n from stock_prices", "--warehouse", db, "--format", "json").stdout
    assert json.loads(out) == {"n": raw.clean}


def test_query_and_load_errors_are_one_line(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    for args, text in [
        (
            ["query", "nope", "--warehouse", f"duckdb://{tmp_path}/x.duckdb"],
            "unknown query 'nope': expected SQL or one",
        ),
        (["query", "vwap", "--warehouse", f"duckdb://{tmp_path}/x.duckdb"], "no DuckDB warehouse"),
        (
            ["query", " ", "--warehouse", f"duckdb://{tmp_path}/x.duckdb"],
            f"no query given: expected SQL or one of {', '.join(warehouse.ANALYTICS)}",
        ),
        (["query", "-- a comment", "--warehouse", f"duckdb://{db}"], "no SQL statement in '-- a comment'"),
        (["query", ";", "--warehouse", f"duckdb://{db}"], "no SQL statement in ';'"),
        (["query", "nope", "--warehouse", "postgres://x"], "expected duckdb:///path or redshift://"),
        (["load", "--input", "s3://", "--warehouse", f"duckdb://{tmp_path}/x.duckdb"], "[warehouse] input = 's3://'"),
        (
            ["load", "--input", f"file://{tmp_path}", "--warehouse", "redshift://stockpipe-wg/dev"],
            "Redshift COPY reads from S3",
        ),
        (
            ["load", "--input", "s3://b/p", "--warehouse", "redshift://stockpipe-wg/dev"],
            "[warehouse] iam_role is not set",
        ),
    ]:
        done = cli(*args, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert text in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "gaps, moving_average" in cli("query", "--help").stdout
    args = ["load", "--input", "s3://b/p", "--warehouse", "redshift://stockpipe-wg/dev"]
    args += ["--iam-role", "arn:aws:iam::1:role/r"]
    done = cli(*args, "--s3-endpoint-url", "http://127.0.0.1:9", env=no_aws_credentials(tmp_path), check=False)
    assert done.returncode == 1 and "cannot list s3://b/p/processed.data/" in done.stderr, done.stderr
    assert "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in done.stderr
    assert "Traceback" not in done.stderr
    # The Python API checks its own input the same way.
    with pytest.raises(ConfigError, match=r"--input 's3://': expected s3://bucket/prefix"):
        warehouse.load("s3://", f"duckdb://{tmp_path}/x.duckdb", config=load_config(env={}, use_default_file=False))


# ---------------------------------------------------------------- Redshift


def test_every_statement_parses_as_redshift_sql() -> None:
    import sqlglot

    statements = warehouse.load_statements(
        schema="public", manifest="s3://b/_loads/m.json", iam_role="arn:aws:iam::1:role/r"
    )
    assert [s.split()[0].upper() for s in statements] == ["CREATE", "CREATE", "COPY", "SELECT", "MERGE", "DROP"]
    for sql in statements + [warehouse.analytics_sql(n) for n in warehouse.ANALYTICS]:
        parsed = sqlglot.parse(sql, read="redshift", error_level=sqlglot.ErrorLevel.RAISE)
        assert len(parsed) == 1 and parsed[0] is not None, sql
    create = sqlglot.parse_one(statements[0], read="redshift")
    cols = [(c.name, c.args["kind"].sql("redshift")) for c in create.find_all(sqlglot.exp.ColumnDef)]
    assert cols == [
        ("symbol", "VARCHAR(64)"),
        ("price", "DECIMAL(18, 8)"),
        ("volume", "DOUBLE PRECISION"),
        ("trade_ts", "TIMESTAMP"),
        ("conditions", "VARCHAR(512)"),
        ("received_ts", "TIMESTAMP"),
        ("source", "VARCHAR(64)"),
        ("kafka_partition", "INTEGER"),
        ("kafka_offset", "BIGINT"),
    ]
    from stockpipe import rules

    assert [c[0] for c in cols] == [c[0] for c in rules.COLUMNS], "Redshift COPY maps Parquet columns by position"
    assert "DISTKEY (kafka_offset)" in statements[0] and "COMPOUND SORTKEY (trade_ts, symbol)" in statements[0]
    assert "FORMAT AS PARQUET MANIFEST" in statements[2]


def _lake_on_s3(stack: Stack, tmp_path: Path) -> tuple[str, Any]:
    import stockpipe

    write_raw(tmp_path, clean_per_day=200, objects_per_day=2)
    s3 = stack.s3()
    bucket, prefix = "kafka.stock.market.project", f"rs-{dt.datetime.now().timestamp():.0f}-{id(tmp_path)}"
    lake = f"s3://{bucket}/{prefix}"
    cfg = load_config(env=stack.env, use_default_file=False)
    local = f"file://{tmp_path}"
    cfg.transform = dataclasses.replace(cfg.transform, input=local, output=local)
    stockpipe.transform(config=cfg)
    for f in sorted((tmp_path / "processed.data").rglob("*.parquet")):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{f.relative_to(tmp_path)}", Body=f.read_bytes())
    return lake, s3


class RedshiftLoad:
    """A processed lake on the S3 server, a Redshift Data client to stub, and the load's statements."""

    def __init__(self, stack: Stack, tmp_path: Path) -> None:
        import hashlib

        import boto3

        self.lake, self.s3 = _lake_on_s3(stack, tmp_path)
        self.cfg = load_config(env=stack.env, use_default_file=False)
        self.cfg.warehouse.iam_role = "arn:aws:iam::123456789012:role/redshift-copy"
        self.cfg.warehouse.poll_seconds = 0.0
        self.client = boto3.client(
            "redshift-data", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        self.bucket, prefix = self.lake[5:].split("/", 1)
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{prefix}/processed.data/")["Contents"]
        self.files = [
            warehouse._File(
                f"s3://{self.bucket}/{o['Key']}", self.s3.head_object(Bucket=self.bucket, Key=o["Key"])["ContentLength"]
            )
            for o in listed
        ]
        digest = hashlib.sha256(redshift.manifest_json(sorted(self.files, key=lambda f: f.uri))).hexdigest()[:16]
        self.manifest = f"s3://{self.bucket}/{prefix}/_loads/manifest-{digest}.json"
        self.sqls = warehouse.load_statements(
            schema="public", manifest=self.manifest, iam_role=self.cfg.warehouse.iam_role
        )
        self.where = {"WorkgroupName": "stockpipe-wg", "Database": "dev"}


def test_redshift_load_sends_exactly_these_requests(stack: Stack, tmp_path: Path) -> None:
    from botocore.stub import Stubber

    rs = RedshiftLoad(stack, tmp_path)
    lake, s3, cfg, client, bucket = rs.lake, rs.s3, rs.cfg, rs.client, rs.bucket
    files, manifest, sqls, where = rs.files, rs.manifest, rs.sqls, rs.where
    subs = [{"Id": f"b1:{i + 1}", "Status": "FINISHED", "QueryString": s} for i, s in enumerate(sqls)]
    subs[2]["ResultRows"] = 410  # COPY
    subs[4]["ResultRows"] = 410  # MERGE: 300 already there, 110 new
    with Stubber(client) as stub:
        stub.add_response(
            "batch_execute_statement", {"Id": "b1"}, {"Sqls": sqls, "StatementName": "stockpipe-load", **where}
        )
        stub.add_response("describe_statement", {"Id": "b1", "Status": "STARTED"}, {"Id": "b1"})
        stub.add_response("describe_statement", {"Id": "b1", "Status": "FINISHED", "SubStatements": subs}, {"Id": "b1"})
        stub.add_response(
            "get_statement_result",
            {"Records": [[{"longValue": 300}]], "ColumnMetadata": [{"name": "matched"}]},
            {"Id": "b1:4"},
        )
        stub.add_response(
            "execute_statement", {"Id": "c1"}, {"Sql": "SELECT COUNT(*) FROM public.stock_prices", **where}
        )
        stub.add_response("describe_statement", {"Id": "c1", "Status": "FINISHED"}, {"Id": "c1"})
        stub.add_response(
            "get_statement_result",
            {"Records": [[{"longValue": 5410}]], "ColumnMetadata": [{"name": "count"}]},
            {"Id": "c1"},
        )
        stats = warehouse.load(lake, "redshift://stockpipe-wg/dev", config=cfg, redshift_data_client=client)
        stub.assert_no_pending_responses()
    assert (stats.files, stats.rows_in, stats.inserted, stats.updated, stats.total_rows) == (2, 410, 110, 300, 5410)
    body = json.loads(s3.get_object(Bucket=bucket, Key=manifest.split(f"{bucket}/", 1)[1])["Body"].read())
    assert [e["url"] for e in body["entries"]] == sorted(f.uri for f in files)
    assert all(e["mandatory"] and e["meta"]["content_length"] > 0 for e in body["entries"])

    # A failed COPY reports the lines of sys_load_error_detail.
    failed = [dict(s, Status="FAILED", Error="Load into table failed") if s["Id"] == "b1:3" else s for s in subs]
    with Stubber(client) as stub:
        stub.add_response(
            "batch_execute_statement", {"Id": "b2"}, {"Sqls": sqls, "StatementName": "stockpipe-load", **where}
        )
        stub.add_response("describe_statement", {"Id": "b2", "Status": "FAILED", "SubStatements": failed}, {"Id": "b2"})
        stub.add_response("execute_statement", {"Id": "e1"}, None)
        stub.add_response("describe_statement", {"Id": "e1", "Status": "FINISHED"}, {"Id": "e1"})
        line = [{"stringValue": "s3://b/x.parquet"}, {"longValue": 1}, {"stringValue": "price"}, {"longValue": 1216}]
        line.append({"stringValue": "Invalid digit"})
        stub.add_response("get_statement_result", {"Records": [line]}, {"Id": "e1"})
        with pytest.raises(WarehouseError) as err:
            warehouse.load(lake, "redshift://stockpipe-wg/dev", config=cfg, redshift_data_client=client)
    assert "Load into table failed" in str(err.value)
    assert "s3://b/x.parquet | 1 | price | 1216 | Invalid digit" in str(err.value)


def test_an_interrupted_redshift_load_is_cancelled_and_showed_its_progress(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import signal

    from botocore.stub import Stubber

    rs = RedshiftLoad(stack, tmp_path)
    # Two statements done, COPY running, the rest waiting.
    states = ["FINISHED", "FINISHED", "STARTED"] + ["SUBMITTED"] * (len(rs.sqls) - 3)
    subs = [
        {"Id": f"b1:{i + 1}", "Status": st, "QueryString": q}
        for i, (st, q) in enumerate(zip(states, rs.sqls, strict=True))
    ]
    lines: list[str] = []

    def status(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while COPY runs

    with Stubber(rs.client) as stub:
        stub.add_response(
            "batch_execute_statement", {"Id": "b1"}, {"Sqls": rs.sqls, "StatementName": "stockpipe-load", **rs.where}
        )
        for _ in range(2):
            stub.add_response(
                "describe_statement", {"Id": "b1", "Status": "STARTED", "SubStatements": subs}, {"Id": "b1"}
            )
        stub.add_response("cancel_statement", {"Status": True}, {"Id": "b1"})
        with pytest.raises(KeyboardInterrupt):
            warehouse.load(
                rs.lake, "redshift://stockpipe-wg/dev", config=rs.cfg, redshift_data_client=rs.client, status=status
            )
        stub.assert_no_pending_responses()
    assert lines[0] == f"redshift: statement 3 of {len(rs.sqls)} (COPY) started | 0 s"
    assert "cancelled Redshift statement b1; nothing of it is committed" in caplog.text


def test_redshift_errors_name_the_fix() -> None:
    from botocore.stub import Stubber

    cfg = load_config(env={}, use_default_file=False)
    target = warehouse._target("redshift://stockpipe-wg/dev?region=eu-west-9")
    import boto3

    client = boto3.client("redshift-data", region_name="eu-west-9", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error(
            "execute_statement", "ValidationException", "Workgroup stockpipe-wg not found.", expected_params=None
        )
        with pytest.raises(WarehouseError, match=r"region 'eu-west-9': check \[warehouse\] region"):
            redshift.RedshiftData(cfg, target, client).run("SELECT 1")
    with pytest.raises(ConfigError, match="redshift://WORKGROUP/DATABASE"):
        warehouse._target("redshift:///dev")
    assert "***" in str(pytest.raises(ConfigError, warehouse._target, "redshift://u:secret@h/").value)


def test_a_redshift_query_reads_stock_prices_from_the_schema_load_writes() -> None:
    import boto3
    from botocore.stub import Stubber

    cfg = load_config(env={"STOCKPIPE_WAREHOUSE_SCHEMA": "analytics"}, use_default_file=False)
    cfg.warehouse.poll_seconds = 0.0
    client = boto3.client("redshift-data", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    where = {"WorkgroupName": "stockpipe-wg", "Database": "dev"}
    sql = warehouse.analytics_sql("vwap")
    with Stubber(client) as stub:
        # Each Data API statement is a session of its own: the search path travels with the query.
        sqls = ["SET search_path TO analytics, public", sql]
        stub.add_response(
            "batch_execute_statement", {"Id": "q1"}, {"Sqls": sqls, "StatementName": "stockpipe-query", **where}
        )
        stub.add_response("describe_statement", {"Id": "q1", "Status": "FINISHED"}, {"Id": "q1"})
        record = [{"stringValue": "AAPL"}, {"doubleValue": 187.5}]
        stub.add_response(
            "get_statement_result",
            {"Records": [record], "ColumnMetadata": [{"name": "symbol"}, {"name": "vwap"}]},
            {"Id": "q1:2"},
        )
        res = warehouse.query("vwap", "redshift://stockpipe-wg/dev", config=cfg, redshift_data_client=client)
        stub.assert_no_pending_responses()
    assert (res.columns, res.rows) == (["symbol", "vwap"], [("AAPL", 187.5)])

    cfg.warehouse.schema = "public"
    with Stubber(client) as stub:
        stub.add_response("execute_statement", {"Id": "q2"}, {"Sql": "SELECT 1", **where})
        stub.add_response("describe_statement", {"Id": "q2", "Status": "FAILED", "Error": "boom"}, {"Id": "q2"})
        with pytest.raises(WarehouseError, match=r"^Redshift query failed: boom$"):
            warehouse.query("SELECT 1", "redshift://stockpipe-wg/dev", config=cfg, redshift_data_client=client)


def _as_data_api(value: Any) -> tuple[dict[str, Any], str]:
    """A value as the Redshift Data API sends it, with its column's typeName."""
    if value is None:
        return {"isNull": True}, "numeric"
    if isinstance(value, bool):
        return {"booleanValue": value}, "bool"
    if isinstance(value, int):
        return {"longValue": value}, "int8"
    if isinstance(value, float):
        return {"doubleValue": value}, "float8"
    if isinstance(value, Decimal):
        return {"stringValue": str(value)}, "numeric"
    if isinstance(value, dt.datetime):  # Redshift prints no trailing zeros of the fraction, none for whole seconds
        text = value.strftime("%Y-%m-%d %H:%M:%S") + (
            f".{value.microsecond:06d}".rstrip("0") if value.microsecond else ""
        )
        return {"stringValue": text}, "timestamp"
    return {"stringValue": value}, "varchar"


@pytest.mark.parametrize("name", ["ohlcv_minute", "volatility", "top_movers", "gaps", "feed_latency"])
def test_a_redshift_query_gives_the_python_values_duckdb_gives(fixed_db: str, name: str) -> None:
    """The Data API sends numerics and timestamps as strings; a notebook must see the same types from
    either warehouse (a datetime to format, a Decimal to convert), not text on Redshift."""
    import boto3
    from botocore.stub import Stubber

    duck = warehouse.query(name, fixed_db, config=load_config(env={}, use_default_file=False))
    assert duck.rows
    encoded = [[_as_data_api(v) for v in row] for row in duck.rows]
    types = [next((t for (f, t) in col if "isNull" not in f), "numeric") for col in zip(*encoded, strict=True)]
    cfg = load_config(env={}, use_default_file=False)
    cfg.warehouse.poll_seconds = 0.0
    client = boto3.client("redshift-data", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("execute_statement", {"Id": "q1"}, None)
        stub.add_response("describe_statement", {"Id": "q1", "Status": "FINISHED"}, {"Id": "q1"})
        meta = [{"name": c, "typeName": t} for c, t in zip(duck.columns, types, strict=True)]
        stub.add_response(
            "get_statement_result",
            {"Records": [[f for f, _ in row] for row in encoded], "ColumnMetadata": meta},
            {"Id": "q1"},
        )
        red = warehouse.query(name, "redshift://stockpipe-wg/dev", config=cfg, redshift_data_client=client)
    assert (red.columns, red.rows) == (duck.columns, duck.rows)


def test_data_api_strings_become_values_and_unknown_forms_stay_text() -> None:
    field = redshift._field
    assert field({"stringValue": "2024-03-08 06:35:09.48"}, "timestamp") == dt.datetime(2024, 3, 8, 6, 35, 9, 480000)
    assert field({"stringValue": "2024-03-08 06:35:09+00"}, "timestamptz") == dt.datetime(
        2024, 3, 8, 6, 35, 9, tzinfo=dt.timezone.utc
    )
    assert field({"stringValue": "2024-03-08 01:35:09.5-05:30"}, "timestamptz") == dt.datetime(
        2024, 3, 8, 7, 5, 9, 500000, tzinfo=dt.timezone.utc
    )
    assert field({"stringValue": "2024-03-08"}, "date") == dt.date(2024, 3, 8)
    assert field({"stringValue": "187.50000000"}, "numeric") == Decimal("187.5")
    assert field({"isNull": True}, "numeric") is None
    assert field({"stringValue": "infinity"}, "timestamp") == "infinity"
    assert field({"stringValue": "AAPL"}, "varchar") == "AAPL"


def test_a_day_and_a_first_day_exclude_each_other_in_the_api_too(tmp_path: Path) -> None:
    import stockpipe

    cfg = load_config(env={}, use_default_file=False)
    lake = f"file://{tmp_path}"
    for run in (
        lambda: stockpipe.transform(lake, lake, date="2024-03-09", since="2024-03-01", config=cfg),
        lambda: warehouse.load(
            lake, f"duckdb://{tmp_path}/w.duckdb", date="2024-03-09", since="2024-03-01", config=cfg
        ),
    ):
        with pytest.raises(ConfigError, match=r"^--date 2024-03-09 and --since 2024-03-01: give one of them$"):
            run()
    assert not (tmp_path / "w.duckdb").exists()


def test_a_warehouse_another_process_holds_open_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "held.duckdb"
    held = duckdb.connect(str(path))  # as a notebook would
    try:
        for args in (["load", "--input", f"file://{tmp_path}"], ["query", "vwap"]):
            done = cli(*args, "--warehouse", f"duckdb://{path}", check=False)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            [line] = done.stderr.strip().splitlines()
            assert line.startswith("python -m stockpipe: error: cannot open the DuckDB warehouse"), line
            assert f"{path} (another process has it open: a notebook, a query or a load)" in line
            assert "Conflicting lock" in line
    finally:
        held.close()


def test_table_format_right_aligns_numbers_only() -> None:
    import decimal

    from stockpipe.warehouse import Result

    result = Result(
        ["symbol", "price", "n", "ok"],
        [("AAPL", decimal.Decimal("129.50"), 7, True), ("BINANCE:BTCUSDT", decimal.Decimal("9.25"), None, False)],
    )
    assert result.format().splitlines() == [
        "symbol          |  price | n | ok",
        "----------------+--------+---+------",
        "AAPL            | 129.50 | 7 | True",
        "BINANCE:BTCUSDT |   9.25 |   | False",
    ]
    assert Result(["a", "b"], []).format().splitlines() == ["a | b", "--+--"]
