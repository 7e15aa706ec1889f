"""Raw JSONL → Parquet: the shared rules, the Rust engine, the Glue job on local Spark, and the
Glue catalog helpers against a local AWS API emulator."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockpipe import load_config, rules
from stockpipe.aws import NO_AWS_CREDENTIALS
from stockpipe.etl import RUST_TRANSFORM_KEYS

from .conftest import PORT_OFFSET, ROOT, Stack, cli, no_aws_credentials
from .transform_helpers import DAYS, write_raw


def cfg_for(root: Path, **transform: Any) -> Any:
    cfg = load_config(env={}, use_default_file=False)
    cfg.transform = dataclasses.replace(cfg.transform, input=f"file://{root}", output=f"file://{root}", **transform)
    return cfg


def parquet_files(root: Path) -> list[str]:
    return sorted(glob.glob(str(root / "processed.data/year=*/month=*/day=*/*.parquet")))


def read_rows(root: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = parquet_files(root)
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files]).to_pylist()


def quarantine(root: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(glob.glob(str(root / "quarantine.data/**/*.json*"), recursive=True)):
        out += [json.loads(line) for line in Path(f).read_text(encoding="utf-8").splitlines()]
    return sorted(out, key=lambda d: (d["object"], d["raw"], d["reason"]))


def digests(root: Path) -> dict[str, str]:
    out = {}
    for f in sorted(glob.glob(str(root / "*.data/**/*"), recursive=True)):
        if os.path.isfile(f) and "/raw.data/" not in f:
            out[os.path.relpath(f, root)] = hashlib.sha256(Path(f).read_bytes()).hexdigest()
    return out


def parquet_columns(path: str) -> list[tuple[str, str, str]]:
    import pyarrow.parquet as pq

    s = pq.ParquetFile(path).schema
    return [(c.name, c.physical_type, str(c.logical_type)) for c in s]


# ---------------------------------------------------------------- the rules, with and without native


def test_rules_import_and_work_without_the_native_extension(tmp_path: Path) -> None:
    pkg = tmp_path / "stockpipe"
    shutil.copytree(ROOT / "python/stockpipe", pkg, ignore=shutil.ignore_patterns("_native*", "__pycache__"))
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('stockpipe._native') is None\n"
        "import stockpipe.rules as r, stockpipe.spark_etl, stockpipe.spark_local, stockpipe.glue\n"
        'row = r.clean_line(b\'{"symbol":"aapl","price":129.575,"trade_ts":1672348887785,'
        '"kafka_partition":0,"kafka_offset":1}\')\n'
        "print(row.symbol, row.price, r.clean_line('[1]').reason)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AAPL", "129.57500000", "not_object"]


def test_the_engine_and_python_hold_the_same_rule_set() -> None:
    from stockpipe import _native

    assert json.loads(_native.transform_rules()) == rules.SPEC


def test_a_rule_changed_in_python_only_stops_the_rust_engine(tmp_path: Path) -> None:
    from stockpipe import _native
    from stockpipe.exceptions import TransformError

    write_raw(tmp_path, clean_per_day=10, objects_per_day=1)
    changed = {**rules.SPEC, "price_scale": 6, "reasons": [*rules.REASONS, "too_expensive"]}
    cfg = cfg_for(tmp_path)
    with pytest.raises(TransformError, match=r"differ in: price_scale, reasons"):
        _native.run_transform(
            cfg.section_json("transform", only=RUST_TRANSFORM_KEYS), cfg.section_json("s3"), json.dumps(changed)
        )
    assert not (tmp_path / "processed.data").exists()


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (
            b'{"symbol":" brk.b\\t","price":0.000000015,"trade_ts":631152000000,"kafka_partition":0,"kafka_offset":0}',
            "BRK.B",
        ),
        (b'{"symbol":"A","price":1,"trade_ts":4102444800000,"kafka_partition":0,"kafka_offset":0}', "bad_time"),
        (b'{"symbol":"A","price":1,"trade_ts":1,"kafka_partition":2147483648,"kafka_offset":0}', "missing_lineage"),
    ],
)
def test_rule_edges(line: bytes, want: str) -> None:
    r = rules.clean_line(line)
    assert (r.reason if isinstance(r, rules.Quarantined) else r.symbol) == want


# ---------------------------------------------------------------- the Rust engine


def test_rust_engine_counts_reruns_and_selection(tmp_path: Path) -> None:
    import stockpipe

    raw = write_raw(tmp_path, clean_per_day=3000, dirty_every=97)
    stats = stockpipe.transform(config=cfg_for(tmp_path))
    assert (stats.rows, stats.quarantined, stats.duplicates) == (raw.clean, raw.dirty, raw.duplicates)
    assert stats.quarantined_by_reason == {r: raw.reasons[r] for r in rules.REASONS}
    assert stats.days == len(DAYS) and stats.files == len(DAYS)
    rows = read_rows(tmp_path)
    assert len(rows) == raw.clean
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == raw.clean
    assert sorted(q["reason"] for q in quarantine(tmp_path)) == sorted(
        r for r, n in raw.reasons.items() for _ in range(n)
    )
    # Sorted within each day by symbol, then trade time.
    day_rows = [r for r in rows if r["trade_ts"].date() == DAYS[0]]
    assert day_rows == sorted(day_rows, key=lambda r: (r["symbol"], r["trade_ts"], r["kafka_offset"]))
    edge = [r for r in rows if r["conditions"] == "1,24,12"]
    assert [(r["symbol"], str(r["price"])) for r in edge] == [("AAPL", "129.57500000")] * len(DAYS)

    before = digests(tmp_path)
    again = stockpipe.transform(config=cfg_for(tmp_path))
    assert (again.days, again.days_skipped, again.rows) == (0, len(DAYS), 0)
    full = stockpipe.transform(config=cfg_for(tmp_path), full=True)
    assert full.rows == raw.clean
    assert digests(tmp_path) == before, "a full rebuild must write the same bytes under the same names"

    # A new raw object on one day rebuilds that day only, de-duplicating against what was there.
    day = DAYS[1]
    folder = tmp_path / f"raw.data/year={day.year}/month={day.month:02}/day={day.day:02}"
    first = sorted(folder.glob("*.jsonl"))[0].read_bytes().splitlines()[:10]
    (folder / "stock-data+9+late.jsonl").write_bytes(b"\n".join(first) + b"\n")
    late = stockpipe.transform(config=cfg_for(tmp_path))
    assert (late.days, late.days_skipped, late.duplicates) == (1, 1, raw.duplicates // len(DAYS) + 10)
    assert len(read_rows(tmp_path)) == raw.clean

    only = stockpipe.transform(config=cfg_for(tmp_path), date=DAYS[0].isoformat(), full=True)
    assert (only.days, only.days_skipped) == (1, 0)
    since = stockpipe.transform(config=cfg_for(tmp_path), since=DAYS[1].isoformat(), full=True)
    assert since.days == 1
    manifest = json.loads((tmp_path / f"processed.data/_manifest/{DAYS[1].isoformat()}.json").read_text())
    assert manifest["engine"] == "rust" and manifest["rules_version"] == rules.VERSION
    assert any(i["key"].endswith("stock-data+9+late.jsonl") for i in manifest["inputs"])


def test_rust_engine_splits_large_days_and_drops_stale_files(tmp_path: Path) -> None:
    import stockpipe

    raw = write_raw(tmp_path, clean_per_day=2500, objects_per_day=3)
    stats = stockpipe.transform(config=cfg_for(tmp_path, rows_per_file=1000), full=True)
    assert stats.files == 2 * 3
    assert len(parquet_files(tmp_path)) == 6
    stats = stockpipe.transform(config=cfg_for(tmp_path, rows_per_file=10_000), full=True)
    assert len(parquet_files(tmp_path)) == 2, "files of the earlier split must be removed"
    assert len(read_rows(tmp_path)) == raw.clean


@pytest.mark.slow
def test_a_million_raw_records_through_the_rust_engine(tmp_path: Path) -> None:
    import duckdb
    import pyarrow.dataset as ds

    import stockpipe

    raw = write_raw(tmp_path, clean_per_day=500_000, objects_per_day=40, dirty_every=200)
    assert raw.clean + raw.dirty + raw.duplicates > 1_000_000
    t0 = time.monotonic()
    stats = stockpipe.transform(config=cfg_for(tmp_path))
    took = time.monotonic() - t0
    print(f"\n1M raw records → Parquet in {took:.1f}s: {stats.summary()}")
    assert (stats.rows, stats.quarantined, stats.duplicates) == (raw.clean, raw.dirty, raw.duplicates)
    before = digests(tmp_path)
    assert stockpipe.transform(config=cfg_for(tmp_path)).days == 0
    assert stockpipe.transform(config=cfg_for(tmp_path), full=True).rows == raw.clean
    assert digests(tmp_path) == before

    # Readable by pyarrow (with the hive partitions), DuckDB and Spark.
    table = ds.dataset(tmp_path / "processed.data", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == raw.clean
    assert set(table.column("day").to_pylist()) == {d.day for d in DAYS}
    glob_ = str(tmp_path / "processed.data/*/*/*/*.parquet")
    con = duckdb.connect()
    n, distinct, ty = con.execute(
        f"select count(*), count(distinct (kafka_partition, kafka_offset)), any_value(typeof(price)) "
        f"from read_parquet('{glob_}', hive_partitioning = true)"
    ).fetchone()
    assert (n, distinct, ty) == (raw.clean, raw.clean, "DECIMAL(18,8)")
    spark_count = spark_read_count(tmp_path / "processed.data")
    assert spark_count == raw.clean


def spark_read_count(path: Path) -> int:
    code = (
        "import sys\n"
        "from stockpipe.spark_local import local_session\n"
        "s = local_session('read-check')\n"
        f"df = s.read.parquet('file://{path}')\n"
        "types = [df.schema[c].dataType.simpleString() for c in ('price', 'trade_ts')]\n"
        "print('COUNT', df.count(), *types)\n"
        "s.stop()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("COUNT"))
    _, n, price, ts = line.split()
    assert (price, ts) == ("decimal(18,8)", "timestamp")
    return int(n)


def raw_lake_in_s3(stack: Stack, root: Path, tag: str, **sizes: int) -> tuple[Any, str, Any]:
    """Raw objects written under ``root`` and uploaded to the S3 server: (client, lake URI, what was written)."""
    raw = write_raw(root, **sizes)
    s3 = stack.s3()
    bucket, prefix = "kafka.stock.market.project", f"{tag}-{time.time_ns()}"
    for path in raw.objects:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root)}", Body=path.read_bytes())
    return s3, f"s3://{bucket}/{prefix}", raw


def processed_tables(s3: Any, uri: str) -> list[Any]:
    """Each Parquet file under the lake's processed.data/ (key order), each checked to be SSE-S3 encrypted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bucket, prefix = uri[len("s3://") :].split("/", 1)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/processed.data/")["Contents"]]
    tables = []
    for key in sorted(k for k in keys if k.endswith(".parquet")):
        obj = s3.get_object(Bucket=bucket, Key=key)
        assert obj["ServerSideEncryption"] == "AES256", key
        tables.append(pq.read_table(pa.BufferReader(obj["Body"].read()), partitioning=None))
    return tables


def test_rust_engine_reads_and_writes_the_s3_server(stack: Stack, tmp_path: Path) -> None:
    s3, uri, raw = raw_lake_in_s3(stack, tmp_path, "etl", clean_per_day=2000, objects_per_day=4, dirty_every=50)
    done = cli("etl", "--input", uri, "--output", uri, "--json", env=stack.env)
    stats = json.loads(done.stdout)
    assert (stats["rows"], stats["quarantined"], stats["duplicates"]) == (raw.clean, raw.dirty, raw.duplicates)
    tables = processed_tables(s3, uri)
    assert len(tables) == len(DAYS)
    assert sum(t.num_rows for t in tables) == raw.clean
    again = json.loads(cli("etl", "--input", uri, "--output", uri, "--json", env=stack.env).stdout)
    assert (again["days"], again["days_skipped"]) == (0, len(DAYS))
    # A bucket that is not there: one line that names the whole location.
    missing = f"s3://missing-{uuid.uuid4().hex[:8]}/lake"
    done = cli("etl", "--input", missing, "--output", uri, env=stack.env, check=False)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.endswith(
        f"stockpipe: error: list {missing}/raw.data/: The specified bucket does not exist (NoSuchBucket)"
    )


@pytest.mark.spark
def test_spark_engine_reads_and_writes_the_s3_server(stack: Stack, tmp_path: Path) -> None:
    """`etl --engine spark` on an s3:// lake: Hadoop's S3A connector (added from Maven Central) against
    the S3 server, the same rows as the Rust engine, and SSE-S3 on every object it writes."""
    import pyarrow as pa

    import stockpipe

    rust = tmp_path / "rust"
    s3, uri, raw = raw_lake_in_s3(stack, rust, "spark", clean_per_day=500, objects_per_day=2, dirty_every=50)
    done = cli("etl", "--engine", "spark", "--input", uri, "--output", uri, "--json", env=stack.env, timeout=900)
    stats = json.loads(done.stdout)  # the JVM's start-up chatter went to its log, not to stdout
    assert "spark | jobs done" in done.stderr  # its progress, once a second
    assert (stats["engine"], stats["rows"], stats["quarantined"], stats["duplicates"]) == (
        "spark",
        raw.clean,
        raw.dirty,
        raw.duplicates,
    )
    stockpipe.transform(config=cfg_for(rust))
    tables = processed_tables(s3, uri)
    assert len(tables) == len(DAYS)
    assert pa.concat_tables(tables).to_pylist() == read_rows(rust)
    bucket, prefix = uri[len("s3://") :].split("/", 1)
    for day in DAYS:
        key = f"{prefix}/processed.data/_manifest/{day}.json"
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert manifest["engine"] == "spark" and manifest["rows"] > 0

    # Nothing changed: the manifests say so, and no day is rebuilt.
    again = json.loads(cli("etl", "--engine", "spark", "--input", uri, "--output", uri, "--json", env=stack.env).stdout)
    assert (again["days"], again["days_skipped"]) == (0, len(DAYS))

    # A bucket that is not there: one line naming it, not a JVM stack trace.
    missing = cli(
        "etl", "--engine", "spark", "--input", "s3://no-such-bucket-here/x", "--output", uri, env=stack.env, check=False
    )
    assert missing.returncode == 1, missing.stderr[-3000:]
    errors = [line for line in missing.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no-such-bucket-here" in errors[0], missing.stderr[-3000:]
    assert "Traceback" not in missing.stderr and "\tat org." not in missing.stderr
    # No credentials for S3A's chain: the same line as the other commands give.
    env = no_aws_credentials(tmp_path, stack.env)
    unsigned = cli("etl", "--engine", "spark", "--input", uri, "--output", uri, env=env, check=False)
    assert unsigned.returncode == 1, unsigned.stderr[-3000:]
    assert unsigned.stderr.strip().splitlines()[-1] == f"python -m stockpipe: error: spark: {NO_AWS_CREDENTIALS}"


def test_no_aws_credentials_is_one_line_for_the_rust_engine_and_the_sink(tmp_path: Path) -> None:
    env = no_aws_credentials(tmp_path)
    server = ["--s3-endpoint-url", "http://127.0.0.1:9"]  # never reached: the request is not signed
    done = cli("etl", "--input", "s3://b/p", "--output", f"file://{tmp_path}", *server, env=env, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"python -m stockpipe: error: list s3://b/p/raw.data/: {NO_AWS_CREDENTIALS}"
    # The sink: at start, before it waits for Kafka, as for a bucket that is not there.
    done = cli("sink", "--output", "s3://b/p", *server, "--bootstrap-servers", "127.0.0.1:9", env=env, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"python -m stockpipe: error: sink: cannot write to s3://b/p: {NO_AWS_CREDENTIALS}"


def test_etl_command_errors_are_one_line(tmp_path: Path) -> None:
    for args, text in [
        (["--date", "2024-13-01"], "--date '2024-13-01': expected a date as YYYY-MM-DD"),
        (["--input", str(tmp_path)], "expected s3://bucket/prefix or file:///path"),
        (["--input", "s3://"], "[transform] input = 's3://' (from flag --input): expected s3://bucket"),
        (["--compression", "lz4"], "expected zstd, snappy or none"),
        (["--engine", "flink"], "expected rust or spark"),
    ]:
        done = cli("etl", "--output", f"file://{tmp_path}", *args, check=False)
        assert done.returncode == 2, done.stderr
        assert text in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert "--since" in cli("etl", "--help").stdout
    empty = json.loads(cli("etl", "--input", f"file://{tmp_path}", "--output", f"file://{tmp_path}", "--json").stdout)
    assert empty["days"] == 0 and empty["rows"] == 0


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--processed-prefix", "raw.data"], "raw_prefix (file://{root}/raw.data) is the same place as processed_"),
        (["--quarantine-prefix", "raw.data/q"], "raw_prefix (file://{root}/raw.data) overlaps quarantine_prefix"),
        (["--processed-prefix", "/"], "raw_prefix (file://{root}/raw.data) overlaps processed_prefix"),
        (["--quarantine-prefix", "processed.data/"], "is the same place as quarantine_prefix"),
        (["--processed-prefix", "p/../raw.data"], "processed_prefix = 'p/../raw.data': a prefix is a path of names"),
        (["--processed-prefix", "link"], "raw_prefix (file://{root}/raw.data) is the same place as processed_"),
    ],
)
def test_zones_that_overlap_are_refused_before_anything_is_read(tmp_path: Path, args: list[str], names: str) -> None:
    """Stale output files of a day are removed: with raw.data/ inside (or equal to) the processed or the
    quarantine zone, the transform deleted the raw JSONL it had just read and exited 0."""
    write_raw(tmp_path, clean_per_day=100)
    (tmp_path / "link").symlink_to(tmp_path / "raw.data", target_is_directory=True)
    cli("etl", "--input", f"file://{tmp_path}", "--output", f"file://{tmp_path}")  # something to lose

    def everything() -> dict[str, str]:
        files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "link" not in p.parts)
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = everything()
    assert any("/raw.data/" in k for k in before) and any("/processed.data/" in k for k in before)
    lake = f"file://{tmp_path}"
    done = cli("etl", "--input", lake, "--output", lake, *args, check=False)
    assert done.returncode == 2, done.stderr
    assert names.format(root=tmp_path) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert everything() == before, "nothing is read, written or removed"


def test_links_fifos_and_undecodable_names_are_not_objects(tmp_path: Path) -> None:
    """Objects are regular files under the lake: a FIFO named `*.jsonl` hung the run for ever, a link to
    /etc/passwd had its contents copied into the quarantine, and a name that is not UTF-8 ended the run."""
    raw = write_raw(tmp_path, clean_per_day=200)
    day = tmp_path / f"raw.data/year={DAYS[0].year}/month={DAYS[0].month:02}/day={DAYS[0].day:02}"
    os.mkfifo(day / "fifo.jsonl")
    (day / "passwd.jsonl").symlink_to("/etc/passwd")
    (day / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (day.parent / "day=31").symlink_to("/etc", target_is_directory=True)
    (day / os.fsdecode(b"bad-\xff.jsonl")).write_bytes(b"")
    lake = f"file://{tmp_path}"
    done = cli("etl", "--input", lake, "--output", lake, "--json", check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["rows"], stats["days"]) == (raw.clean, len(DAYS))
    assert "root:" not in json.dumps(quarantine(tmp_path))
    for name in ("fifo.jsonl", "passwd.jsonl", "dangling.jsonl", "day=31", "bad-"):
        assert name in done.stderr, (name, done.stderr)


# ---------------------------------------------------------------- the Glue job on local Spark


@pytest.mark.spark
def test_glue_job_on_local_spark_matches_the_rust_engine(tmp_path: Path) -> None:
    import stockpipe

    rust, spark = tmp_path / "rust", tmp_path / "spark"
    raw = write_raw(rust, clean_per_day=20_000, objects_per_day=6, dirty_every=40)
    shutil.copytree(rust / "raw.data", spark / "raw.data")

    stats = stockpipe.transform(config=cfg_for(rust))
    job = [
        sys.executable,
        str(ROOT / "glue/stockpipe_etl.py"),
        "--input",
        f"file://{spark}",
        "--output",
        f"file://{spark}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
    done = subprocess.run(job, capture_output=True, text=True, env=env, check=False, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert (counts["rows"], counts["quarantined"], counts["duplicates"]) == (raw.clean, raw.dirty, raw.duplicates)
    assert counts["rows"] == stats.rows

    # Identical rows (in the same order), identical Parquet columns, identical quarantine.
    assert read_rows(spark) == read_rows(rust)
    for a, b in zip(parquet_files(rust), parquet_files(spark), strict=True):
        assert Path(a).parent.relative_to(rust) == Path(b).parent.relative_to(spark)
        assert parquet_columns(a) == parquet_columns(b)
    assert quarantine(spark) == quarantine(rust)
    for day in DAYS:
        m_rust = json.loads((rust / f"processed.data/_manifest/{day}.json").read_text())
        m_spark = json.loads((spark / f"processed.data/_manifest/{day}.json").read_text())
        for key in ("inputs", "lines", "rows", "quarantined", "duplicates", "rules_version"):
            assert m_rust[key] == m_spark[key], key

    # The manifests are shared: after the Spark job, the Rust engine sees nothing to do.
    assert stockpipe.transform(config=cfg_for(spark)).days_skipped == len(DAYS)


@pytest.mark.spark
def test_an_interrupted_spark_run_ends_in_one_line_and_its_days_are_rebuilt_next_time(tmp_path: Path) -> None:
    import signal

    import stockpipe

    # The lake of the embedded defaults, file://./stockpipe-data/…, relative to the command's directory.
    lake = tmp_path / "stockpipe-data" / "kafka.stock.market.project"
    write_raw(lake, clean_per_day=100_000, objects_per_day=4)
    assert stockpipe.transform(config=cfg_for(lake)).days == len(DAYS)
    before = read_rows(lake)
    manifests = [lake / f"processed.data/_manifest/{day.isoformat()}.json" for day in DAYS]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "STOCKPIPE_TRANSFORM_"))}
    job = [sys.executable, "-m", "stockpipe", "etl", "--engine", "spark", "--full"]
    proc = subprocess.Popen(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 600
        while all(m.exists() for m in manifests):  # a day's rebuild starts by removing its manifest
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: cancelling Spark's jobs" in err and "Traceback" not in err, err[-3000:]
    # The days it did not finish kept no manifest, so even a run without --full rebuilds them.
    assert not any(m.exists() for m in manifests)
    assert stockpipe.transform(config=cfg_for(lake)).days == len(DAYS)
    assert read_rows(lake) == before


def test_a_relative_file_lake_is_absolute_for_hadoop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stockpipe.spark_local import hadoop_uri

    monkeypatch.chdir(tmp_path)
    assert hadoop_uri("file://./stockpipe-data/lake") == f"file://{tmp_path}/stockpipe-data/lake"
    assert hadoop_uri("file://lake") == f"file://{tmp_path}/lake"
    assert hadoop_uri(f"file://{tmp_path}/x") == f"file://{tmp_path}/x"
    assert hadoop_uri("s3://bucket/prefix") == "s3a://bucket/prefix"


@pytest.mark.spark
def test_an_exception_pyspark_converts_ends_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PySpark raises some JVM exceptions as classes of its own, not as Py4JJavaError."""
    from pyspark.errors.exceptions.captured import IllegalArgumentException

    import stockpipe
    from stockpipe import spark_local

    class Session:
        stopped = False

        def stop(self) -> None:
            Session.stopped = True

    def fails(*_args: object, **_kwargs: object) -> dict[str, int]:
        raise IllegalArgumentException(desc="Wrong FS: file://x/y, expected: file:///", stackTrace="\tat org.apache…")

    from pyspark import SparkContext

    monkeypatch.setattr(SparkContext, "_jvm", object())  # the exception's constructor asserts a JVM
    monkeypatch.setattr(spark_local, "local_session", lambda **_kwargs: Session())
    monkeypatch.setattr(spark_local, "run", fails)
    write_raw(tmp_path, clean_per_day=10, objects_per_day=1)
    with pytest.raises(stockpipe.TransformError) as caught:
        stockpipe.transform(f"file://{tmp_path}", f"file://{tmp_path}", engine="spark")
    assert str(caught.value) == "spark: IllegalArgumentException: Wrong FS: file://x/y, expected: file:///"
    assert Session.stopped


# ---------------------------------------------------------------- Glue catalog, crawler and job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def aws_emulator() -> Iterator[str]:
    """moto's server: Glue has no local server, so its control plane is emulated."""
    port = 25500 + PORT_OFFSET
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.3)
        # Job runs advance one state per two status reads (STARTING → RUNNING → SUCCEEDED), as
        # a real run moves while `glue run` follows it.
        body = json.dumps({"model_name": "glue::job_run", "transition": {"progression": "manual", "times": 2}})
        req = urllib.request.Request(url + "/moto-api/state-manager/set-transition", data=body.encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_glue_setup_deploy_run_twice(stack: Stack, aws_emulator: str, tmp_path: Path) -> None:
    import boto3

    raw = write_raw(tmp_path, clean_per_day=50, objects_per_day=2)
    s3 = stack.s3()
    bucket, prefix = "kafka.stock.market.project", f"glue-{time.time_ns()}"
    for path in raw.objects:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(tmp_path)}", Body=path.read_bytes())
    env = dict(
        stack.env,
        STOCKPIPE_GLUE_LAKE=f"s3://{bucket}/{prefix}",
        STOCKPIPE_GLUE_ENDPOINT_URL=aws_emulator,
        STOCKPIPE_GLUE_ROLE="arn:aws:iam::123456789012:role/stockpipe-glue",
        STOCKPIPE_GLUE_POLL_SECONDS="0.2",
    )
    days = [f"{d.year:04}/{d.month:02}/{d.day:02}" for d in DAYS]
    first = cli("glue", "setup", env=env).stdout.splitlines()
    assert first == [
        "created   database stock_db",
        "created   table raw_data",
        *[f"created   partition raw_data/{d}" for d in days],
        "created   table processed_data",
        "created   crawler stockpipe-raw-crawler",
    ]
    second = cli("glue", "setup", env=env).stdout.splitlines()
    assert second == [
        "unchanged database stock_db",
        "unchanged table raw_data",
        "unchanged table processed_data",
        "unchanged crawler stockpipe-raw-crawler",
    ]
    glue = boto3.client(
        "glue", endpoint_url=aws_emulator, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    assert [d["Name"] for d in glue.get_databases()["DatabaseList"]] == ["stock_db"]
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName="stock_db")["TableList"]}
    assert set(tables) == {"raw_data", "processed_data"}
    processed = tables["processed_data"]["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in processed["Columns"]] == [
        ("symbol", "string"),
        ("price", "decimal(18,8)"),
        ("volume", "double"),
        ("trade_ts", "timestamp"),
        ("conditions", "string"),
        ("received_ts", "timestamp"),
        ("source", "string"),
        ("kafka_partition", "int"),
        ("kafka_offset", "bigint"),
    ]
    assert processed["Location"] == f"s3://{bucket}/{prefix}/processed.data/"
    parts = glue.get_partitions(DatabaseName="stock_db", TableName="raw_data")["Partitions"]
    assert sorted("/".join(p["Values"]) for p in parts) == days
    crawler = glue.get_crawler(Name="stockpipe-raw-crawler")["Crawler"]
    assert crawler["Targets"]["S3Targets"][0]["Path"] == f"s3://{bucket}/{prefix}/raw.data/"
    assert len(glue.get_crawlers()["Crawlers"]) == 1

    # After the transform, setup registers the processed partitions too.
    cli("etl", "--input", f"s3://{bucket}/{prefix}", "--output", f"s3://{bucket}/{prefix}", env=env)
    third = cli("glue", "setup", env=env).stdout.splitlines()
    assert [f"created   partition processed_data/{d}" for d in days] == [x for x in third if "partition" in x]

    deployed = cli("glue", "deploy", env=env).stdout.splitlines()
    assert deployed[-1] == "created   job stockpipe-etl"
    assert cli("glue", "deploy", env=env).stdout.splitlines()[-1] == "unchanged job stockpipe-etl"
    job = glue.get_job(JobName="stockpipe-etl")["Job"]
    assert job["Command"]["Name"] == "glueetl" and job["GlueVersion"] == "5.0"
    args = job["DefaultArguments"]
    assert args["--job-bookmark-option"] == "job-bookmark-enable"
    assert args["--input"] == f"s3://{bucket}/{prefix}" and args["--source"] == "catalog"
    assert args["--encryption-type"] == "sse-s3"  # the output encrypted like the raw zone
    script_key = job["Command"]["ScriptLocation"].split(f"s3://{bucket}/", 1)[1]
    script = s3.get_object(Bucket=bucket, Key=script_key)
    assert script["ServerSideEncryption"] == "AES256"
    assert script["Body"].read() == (ROOT / "glue/stockpipe_etl.py").read_bytes()
    lib_key = args["--extra-py-files"].split(f"s3://{bucket}/", 1)[1]
    names = zipfile.ZipFile(io_bytes(s3.get_object(Bucket=bucket, Key=lib_key)["Body"].read())).namelist()
    assert {"stockpipe/rules.py", "stockpipe/spark_etl.py", "stockpipe/spark_local.py"} <= set(names)
    assert not any("_native" in n or n.startswith("stockpipe/dev/") for n in names)
    assert len(glue.get_jobs()["Jobs"]) == 1

    ran = cli("glue", "run", env=env)
    assert json.loads(ran.stdout)["state"] == "SUCCEEDED"
    assert "stockpipe-etl: RUNNING" in ran.stderr and "stockpipe-etl: SUCCEEDED" in ran.stderr


def io_bytes(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def test_glue_commands_explain_missing_settings(tmp_path: Path) -> None:
    done = cli("glue", "setup", "--output", f"file://{tmp_path}", check=False)
    assert done.returncode == 2 and "Glue reads S3" in done.stderr
    done = cli("glue", "deploy", "--lake", "s3://b/p", "--glue-endpoint-url", "http://127.0.0.1:9", check=False)
    assert done.returncode == 2 and "[glue] role is not set" in done.stderr
    done = cli(
        "glue", "run", "--glue-endpoint-url", "http://127.0.0.1:9", env=no_aws_credentials(tmp_path), check=False
    )
    assert done.returncode == 1 and "get_job: no AWS credentials: set AWS_ACCESS_KEY_ID" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_interrupting_glue_run_leaves_the_job_running_and_says_how_to_stop_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import signal

    import boto3
    from botocore.stub import Stubber

    from stockpipe.glue import job as glue_job

    cfg = load_config(env={}, use_default_file=False)
    cfg.glue.poll_seconds = 0.0
    client = boto3.client("glue", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(glue_job, "_client", lambda _cfg, _service: client)
    name = cfg.glue.job_name

    def on_state(state: str, _seconds: float) -> None:
        if state == "RUNNING":
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while the job runs

    with Stubber(client) as stub:  # no BatchStopJobRun among them: the run is Glue's to finish
        stub.add_response("get_job", {"Job": {"Name": name}}, {"JobName": name})
        stub.add_response("start_job_run", {"JobRunId": "jr_1"}, {"JobName": name, "Arguments": {}})
        stub.add_response(
            "get_job_run", {"JobRun": {"Id": "jr_1", "JobRunState": "RUNNING"}}, {"JobName": name, "RunId": "jr_1"}
        )
        with pytest.raises(KeyboardInterrupt):
            glue_job.run(cfg, on_state=on_state)
        stub.assert_no_pending_responses()
    assert f"aws glue batch-stop-job-run --job-name {name} --job-run-ids jr_1" in caplog.text
