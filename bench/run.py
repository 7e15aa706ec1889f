"""stockpipe benchmarks, side by side: ``python bench/run.py [--quick] [--out BENCHMARKS.md]``.

Every stage runs its contenders in one run, on the same broker, the same S3 server and the same
input, alternating contenders over ``--rounds`` rounds; the table reports medians and ratios to
stockpipe. Each contender is its own process, so its CPU seconds and peak RSS are its own; the S3
server's CPU is sampled too. Inputs come from stockpipe's simulator (same seed for everyone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PY = sys.executable
SYMBOLS = "AAPL,MSFT,AMZN,NVDA,TSLA,META,GOOG,BINANCE:BTCUSDT"


# ---------------------------------------------------------------- measuring one process


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    out: dict[str, Any]
    server_cpu_s: float = 0.0
    # The watched server's CPU over the contender's busy window (its "window": two
    # time.perf_counter() readings, CLOCK_MONOTONIC, the same clock here), in cores.
    server_cores: float | None = None
    # The contender's own CPU over the same window, in cores.
    cores: float | None = None
    # The Kafka brokers' CPU over the same window, in cores (when watched).
    broker_cores: float | None = None


def tree_cpu_rss(proc: psutil.Process) -> tuple[float, float]:
    cpu = rss = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    return cpu, rss


def measure(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    watch: list[int] | None = None,
    brokers: list[int] | None = None,
    timeout: float = 900,
) -> Run:
    """Runs ``cmd``, sampling its CPU and RSS (children included) every 50 ms; parses its last stdout line as JSON.
    ``watch`` (the S3 server) and ``brokers`` are sampled too, for their CPU in the contender's busy window."""
    watched = [psutil.Process(p) for p in (watch or []) if psutil.pid_exists(p)]
    kafka = [psutil.Process(p) for p in (brokers or []) if psutil.pid_exists(p)]
    server_before = sum(tree_cpu_rss(p)[0] for p in watched)
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(proc.pid)
    peak = [0.0, 0.0]
    stop = threading.Event()
    server_series: list[tuple[float, float]] = []
    own_series: list[tuple[float, float]] = []
    broker_series: list[tuple[float, float]] = []

    def sample() -> None:
        while not stop.is_set():
            try:
                cpu, rss = tree_cpu_rss(ps)
                peak[0] = max(peak[0], rss)
                peak[1] = max(peak[1], cpu)
            except psutil.Error:
                pass
            now = time.perf_counter()
            if watched:
                server_series.append((now, sum(tree_cpu_rss(p)[0] for p in watched)))
                own_series.append((now, peak[1]))
            if kafka:
                broker_series.append((now, sum(tree_cpu_rss(p)[0] for p in kafka)))
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop.set()
        th.join()
    wall = time.perf_counter() - t0
    # The kernel's accounting of reaped children: the contender and everything it started.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # A grandchild its parent never reaps (Spark's JVM) is missing there: take the sampled tree too.
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), peak[1])
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{err[-3000:]}")
    line = [x for x in out.strip().splitlines() if x.startswith("{")]
    server = sum(tree_cpu_rss(p)[0] for p in watched) - server_before
    result = json.loads(line[-1]) if line else {}
    window = result.get("window")
    return Run(
        wall,
        cpu,
        peak[0] / 2**20,
        result,
        server,
        cores_within(server_series, window),
        cores_within(own_series, window),
        cores_within(broker_series, window),
    )


def cores_within(series: list[tuple[float, float]], window: list[float] | None) -> float | None:
    """Average cores a process used between two monotonic times, from (time, CPU-seconds) samples."""
    if not window or len(series) < 2 or window[1] - window[0] < 0.2:
        return None

    def at(t: float) -> float:
        for (t0, c0), (t1, c1) in itertools.pairwise(series):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0 or 1)
        return series[0][1] if t < series[0][0] else series[-1][1]

    return (at(window[1]) - at(window[0])) / (window[1] - window[0])


# ---------------------------------------------------------------- the stack and the simulator


def stack_up(home: Path) -> dict[str, Any]:
    env = dict(
        os.environ,
        STOCKPIPE_DEV_HOME=str(home),
        STOCKPIPE_DEV_KAFKA_PORT="17092",
        STOCKPIPE_DEV_S3_PORT="17000",
        STOCKPIPE_DEV_BROKERS="1",
    )
    # Every run starts from empty storage: an S3 server holding the objects of earlier runs is slower
    # per PUT, which would make runs on the same machine disagree.
    subprocess.run([PY, "-m", "stockpipe", "dev", "down"], env=env, check=False, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)
    subprocess.run([PY, "-m", "stockpipe", "dev", "up"], env=env, check=True, capture_output=True)
    state = json.loads((home / "stack.json").read_text())
    state["env"] = env
    return state


def warm_broker(bootstrap: str) -> None:
    """One idempotent producer before any measurement: a fresh broker answers the first producer-id
    request with "coordinator load in progress" and librdkafka retries after 500 ms, which would land
    on whichever contender runs first."""
    from confluent_kafka import Producer

    topic = f"bench-warmup-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    p.produce(topic, value=b"warm-up")
    p.flush(30)


def stack_down(state: dict[str, Any]) -> None:
    subprocess.run([PY, "-m", "stockpipe", "dev", "down"], env=state["env"], check=False, capture_output=True)
    home = Path(state["env"]["STOCKPIPE_DEV_HOME"])
    for data in [home / "s3", *home.glob("kafka-*")]:  # the logs stay; the data is gigabytes
        if data.is_dir():
            shutil.rmtree(data, ignore_errors=True)


def aws_env(state: dict[str, Any]) -> dict[str, str]:
    return dict(
        os.environ,
        AWS_ACCESS_KEY_ID=state["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=state["aws_secret_access_key"],
        AWS_REGION=state["aws_region"],
        AWS_DEFAULT_REGION=state["aws_region"],
    )


def ensure_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from stockpipe import _native, load_config

    kafka = load_config(env={}, use_default_file=False).kafka
    kafka.bootstrap_servers, kafka.topic = bootstrap, topic
    _native.ensure_topics(json.dumps(kafka.__dict__), [(topic, partitions)], 30.0)


class Simulator:
    """``stockpipe simulate`` with a trade budget: the same seed, so every contender gets the same stream."""

    def __init__(self, port: int, *, rate: float, trades: int, per_frame: int = 20) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [PY, "-m", "stockpipe", "simulate", "--port", str(port), "--rate", str(rate), "--max-trades", str(trades),
             "--trades-per-frame", str(per_frame), "--symbols", SYMBOLS, "--seed", "7", "--ping-interval-s", "3600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---------------------------------------------------------------- results


@dataclass
class Row:
    stage: str
    contender: str
    runs: list[Run] = field(default_factory=list)
    note: str = ""

    def med(self, f: Any) -> float:
        vals = [f(r) for r in self.runs if f(r) is not None]
        return statistics.median(vals) if vals else float("nan")


def fmt(x: float, digits: int = 0) -> str:
    if x != x:  # nan
        return "–"
    return f"{x:,.{digits}f}"


# ---------------------------------------------------------------- stages


def bench_ws_to_kafka(state: dict[str, Any], n: int, rounds: int) -> list[Row]:
    bootstrap = state["bootstrap_servers"]
    contenders = {
        "stockpipe (Rust producer)": HERE / "contenders/rust_producer.py",
        "confluent-kafka + websockets": HERE / "contenders/confluent_producer.py",
        "seed: websocket-client + kafka-python": HERE / "contenders/seed_producer.py",
    }
    rows = {name: Row("WS → Kafka acked", name) for name in contenders}
    port = 17100
    for _ in range(rounds):
        for name, script in contenders.items():
            port += 1
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            ensure_topic(bootstrap, topic)
            sim = Simulator(port, rate=5_000_000, trades=n)
            try:
                rows[name].runs.append(measure([PY, str(script), sim.url, bootstrap, topic, str(n), SYMBOLS]))
            finally:
                sim.close()
            print(f"  {name}: {rows[name].runs[-1].out}", file=sys.stderr)
    return list(rows.values())


def bench_latency_at_rate(state: dict[str, Any], rate: float, seconds: float, rounds: int) -> list[Row]:
    """frame → ack latency at a steady rate (the target: p99 ≤ 10 ms at 10k trades/s), contenders
    alternating over ``rounds`` (one 20 s window's p99 moves by 10–20 ms with a single stall)."""
    bootstrap = state["bootstrap_servers"]
    n = int(rate * seconds)
    contenders = [
        ("stockpipe (Rust producer)", "rust_producer.py"),
        ("confluent-kafka + websockets", "confluent_producer.py"),
        ("seed: websocket-client + kafka-python", "seed_producer.py"),
        ("reference: the broker alone (confluent-kafka paced produce → ack, no WebSocket)", "broker_floor.py"),
    ]
    rows = {name: Row(f"latency at {rate:,.0f} trades/s", name) for name, _ in contenders}

    def floor(topic: str, secs: float) -> list[str]:
        return [PY, str(HERE / "contenders/broker_floor.py"), bootstrap, topic, str(rate), str(secs), SYMBOLS]

    # Not measured: a few seconds at the same rate first, so no contender's window holds a fresh
    # broker's first seconds of paced load (p99s of 20–60 ms had shown there, once).
    topic = f"bench-lat-warm-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic)
    subprocess.run(floor(topic, 5), check=True, capture_output=True)
    for _ in range(rounds):
        for i, (name, script) in enumerate(contenders):
            topic = f"bench-lat-{uuid.uuid4().hex[:8]}"
            ensure_topic(bootstrap, topic)
            if script == "broker_floor.py":
                run = measure(floor(topic, seconds))
            else:
                sim = Simulator(17300 + i, rate=rate, trades=n)  # one connection: its rate is the total
                try:
                    run = measure([PY, str(HERE / "contenders" / script), sim.url, bootstrap, topic, str(n), SYMBOLS])
                finally:
                    sim.close()
            rows[name].runs.append(run)
            print(f"  latency {name}: {run.out}", file=sys.stderr)
    return list(rows.values())


def fill_topic(bootstrap: str, topic: str, n: int) -> None:
    """n trade records on ``topic`` (the input every sink contender reads)."""
    from confluent_kafka import Producer

    ensure_topic(bootstrap, topic)
    # Uncompressed: kafka-python, the seed's client, has no lz4 codec without extra packages.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "none"})
    rng = random.Random(7)
    syms = SYMBOLS.split(",")
    now = int(time.time() * 1000)
    for i in range(n):
        s = syms[i % len(syms)]
        v = (
            f'{{"symbol":"{s}","price":{rng.uniform(10, 500):.4f},"volume":{rng.randint(1, 500)},"trade_ts":{now + i},'
            f'"conditions":["1","12"],"received_ts":{now + i + 3},"source":"finnhub","schema_version":1}}'
        )
        while True:
            try:
                p.produce(topic, key=s, value=v)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def bench_kafka_to_s3(state: dict[str, Any], n: int, big_n: int, rounds: int, big_batch: int) -> list[Row]:
    """The seed's policy over ``n`` records; large batches over ``big_n`` (a busy window long enough
    to read the S3 server's and the sink's CPU from)."""
    bootstrap, endpoint = state["bootstrap_servers"], state["s3_endpoint_url"]
    bucket = "kafka.stock.market.project"
    topic, big_topic = f"bench-sink-{uuid.uuid4().hex[:8]}", f"bench-sink-big-{uuid.uuid4().hex[:8]}"
    fill_topic(bootstrap, topic, n)
    fill_topic(bootstrap, big_topic, big_n)
    minio = [p["pid"] for p in state.get("processes", []) if p.get("name") == "s3"]
    brokers = [p["pid"] for p in state.get("processes", []) if p.get("name", "").startswith("kafka-")]
    env = aws_env(state)
    contenders = [
        ("stockpipe (Rust sink), 100 / 10 s", "rust_sink.py", 100, topic, n),
        ("confluent-kafka + boto3, 100 / 10 s", "confluent_sink.py", 100, topic, n),
        ("seed: kafka-python + boto3, 100 / 10 s", "seed_sink.py", 100, topic, n),
        (f"stockpipe (Rust sink), {big_batch:,} / 10 s", "rust_sink.py", big_batch, big_topic, big_n),
        (f"confluent-kafka + boto3, {big_batch:,} / 10 s", "confluent_sink.py", big_batch, big_topic, big_n),
    ]
    rows = {c[0]: Row("Kafka → S3 JSONL", c[0]) for c in contenders}

    def sink_cmd(script: str, source: str, target: str, records: int, batch: int) -> list[str]:
        """A sink contender's command line (``target``: the S3 endpoint, or a ``file://`` directory)."""
        group, prefix = f"g-{uuid.uuid4().hex[:8]}", f"bench/{uuid.uuid4().hex[:8]}"
        cmd = [PY, str(HERE / "contenders" / script), bootstrap, source, group, target, bucket, prefix]
        # The tail: at most one partial batch per partition waits for the timer.
        return [*cmd, str(records), str(batch), "10", str(3 * batch)]

    for _ in range(rounds):
        for name, script, batch, source, records in contenders:
            cmd = sink_cmd(script, source, endpoint, records, batch)
            rows[name].runs.append(measure(cmd, env=env, watch=minio, brokers=brokers))
            print(f"  {name}: {rows[name].runs[-1].out}", file=sys.stderr)
    # The S3 server's ceiling for objects of each size: the sink's client with nothing else to do
    # (no Kafka, no encoding). Named with the policy it bounds, so its ratio is to that sink row.
    floor = example_binary("s3_put_floor")
    refs = []
    for records, per_object in ((n, 100), (big_n, big_batch)):
        name = (
            f"reference: the S3 server alone (PUTs of {per_object:,}-record objects; {FLOOR_IN_FLIGHT} in flight), "
            f"{per_object:,} / 10 s"
        )
        row = Row("Kafka → S3 JSONL", name)
        for _ in range(rounds):
            prefix = f"bench/{uuid.uuid4().hex[:8]}"
            cmd = [
                str(floor),
                endpoint,
                bucket,
                prefix,
                str(records // per_object),
                str(per_object),
                str(FLOOR_IN_FLIGHT),
            ]
            row.runs.append(measure(cmd, env=env, watch=minio))
            print(f"  {name}: {row.runs[-1].out}", file=sys.stderr)
        refs.append(row)
    # The sink's own ceiling at each policy: the same run with the local-files store on a RAM disk
    # (when there is one) instead of the S3 server, so nothing else competes for the cores.
    scratch = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    for source, records, batch in ((topic, n, 100), (big_topic, big_n, big_batch)):
        name = f"reference: the Rust sink alone (local files instead of S3), {batch:,} / 10 s"
        row = Row("Kafka → S3 JSONL", name)
        for _ in range(rounds):
            out = Path(tempfile.mkdtemp(prefix="stockpipe-bench-sink-", dir=scratch))
            try:
                cmd = sink_cmd("rust_sink.py", source, out.as_uri(), records, batch)
                row.runs.append(measure(cmd, env=env, watch=minio, brokers=brokers))
                print(f"  {name}: {row.runs[-1].out}", file=sys.stderr)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        refs.append(row)
    # Below the sink: librdkafka reading the same records with the sink's settings and hand-over
    # (bursts from one application queue), each value copied into a buffer of lines and nothing
    # else (no validation, no lineage, no storage) — the part of the sink's cost any sink built on
    # librdkafka pays.
    name = f"reference: librdkafka reading alone (each value copied, nothing else), {big_batch:,} / 10 s"
    row = Row("Kafka → S3 JSONL", name)
    reader = example_binary("kafka_read_floor")
    for _ in range(rounds):
        cmd = [str(reader), bootstrap, big_topic, f"g-{uuid.uuid4().hex[:8]}", str(big_n)]
        row.runs.append(measure(cmd, env=env, watch=minio, brokers=brokers))
        print(f"  {name}: {row.runs[-1].out}", file=sys.stderr)
    refs.append(row)
    return [*rows.values(), *refs]


FLOOR_IN_FLIGHT = 16


def example_binary(name: str) -> Path:
    """Builds ``bench/NAME.rs`` (a cargo example over stockpipe's own clients)."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", name], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release/examples" / name


# ---------------------------------------------------------------- the pipeline's own commands


def pipeline_env(state: dict[str, Any], sim: Simulator, topic: str, lake: str) -> dict[str, str]:
    """The environment for ``python -m stockpipe.producer`` / ``.consumer`` / ``etl`` on the bench stack."""
    env = dict(
        aws_env(state),
        STOCKPIPE_FINNHUB_WS_URL=sim.url,
        STOCKPIPE_FINNHUB_API_KEY="bench",
        STOCKPIPE_FINNHUB_SYMBOLS=SYMBOLS,
        STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS=state["bootstrap_servers"],
        STOCKPIPE_KAFKA_TOPIC=topic,
        STOCKPIPE_KAFKA_GROUP_ID=f"bench-{uuid.uuid4().hex[:6]}",
        STOCKPIPE_S3_ENDPOINT_URL=state["s3_endpoint_url"],
        STOCKPIPE_SINK_OUTPUT=lake,
        STOCKPIPE_TRANSFORM_INPUT=lake,
        STOCKPIPE_TRANSFORM_OUTPUT=lake,
    )
    env.pop("STOCKPIPE_CONFIG", None)
    return env


def start_stage(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m stockpipe.<module>``, its output in ``log``."""
    out = log.open("w")
    return subprocess.Popen(
        [PY, "-m", f"stockpipe.{module}"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
    )


# ---------------------------------------------------------------- end to end


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def bench_end_to_end(state: dict[str, Any], rate: float, seconds: float, work: Path) -> list[str]:
    """simulator (paced) → producer → Kafka → sink (default 100 / 10 s) → S3 → etl → DuckDB, all real.

    A watcher lists the raw prefix every 200 ms and reads each new object: a trade is *visible in S3*
    when its object is first listed. Meanwhile ``transform`` + ``load`` run back to back against the
    same S3 prefix and a DuckDB file: a trade is *queryable* when the first cycle that ends after it
    returns its row. Both are measured from the trade's own timestamp (the simulator's clock)."""
    import duckdb

    from stockpipe import load_config
    from stockpipe.dev.stack import s3_client
    from stockpipe.etl import transform
    from stockpipe.warehouse import load

    bootstrap = state["bootstrap_servers"]
    bucket, prefix = state["bucket"], f"bench/e2e-{uuid.uuid4().hex[:6]}"
    topic = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic)
    n = int(rate * seconds)
    sim = Simulator(17450, rate=rate, trades=n)
    env = pipeline_env(state, sim, topic, f"s3://{bucket}/{prefix}")
    cfg = load_config(env=env, use_default_file=False)
    warehouse = f"duckdb://{work / 'e2e.duckdb'}"
    s3 = s3_client(state)
    visible: dict[tuple[int, int], float] = {}  # (partition, offset) → ms from trade to listed
    queryable: dict[tuple[int, int], float] = {}
    cycles: list[float] = []
    stop = threading.Event()

    def watch_s3() -> None:
        seen: set[str] = set()
        while True:
            final = stop.is_set()
            listed = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/raw.data/"):
                listed += [o["Key"] for o in page.get("Contents", [])]
            now_ms = time.time() * 1000
            for key in listed:
                if key in seen:
                    continue
                seen.add(key)
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                for line in body.splitlines():
                    r = json.loads(line)
                    visible[(r["kafka_partition"], r["kafka_offset"])] = now_ms - r["trade_ts"]
            if final:
                return
            time.sleep(0.2)

    def warehouse_cycles() -> None:
        while True:
            final = stop.is_set()
            t = time.perf_counter()
            transform(config=cfg)
            load(warehouse=warehouse, config=cfg)
            with duckdb.connect(warehouse.removeprefix("duckdb://"), read_only=True) as db:
                rows = db.execute(
                    "SELECT kafka_partition, kafka_offset, epoch_ms(trade_ts) FROM stock_prices"
                ).fetchall()
            now_ms = time.time() * 1000
            for p, o, ts in rows:
                queryable.setdefault((p, o), now_ms - ts)
            cycles.append(time.perf_counter() - t)
            if final:
                return

    procs = [
        start_stage("consumer", env, work / "e2e-sink.log"),
        start_stage("producer", env, work / "e2e-producer.log"),
    ]
    threads = [threading.Thread(target=watch_s3, daemon=True), threading.Thread(target=warehouse_cycles, daemon=True)]
    try:
        time.sleep(3)  # the sink joins its group before the first trade
        for th in threads:
            th.start()
        deadline = time.monotonic() + seconds + 60
        while len(visible) < n and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"end to end: a stage exited early; see {work}/e2e-*.log")
            time.sleep(0.5)
    finally:
        for proc in procs[::-1]:
            proc.send_signal(signal.SIGTERM)  # as Ctrl-C (SIGINT may be ignored in a background job)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.close()
        stop.set()
        for th in threads:
            th.join(600)
    s3_ms, db_ms = list(visible.values()), list(queryable.values())
    print(f"  end to end: {len(s3_ms)} visible in S3, {len(db_ms)} queryable, {len(cycles)} cycles", file=sys.stderr)
    return [
        "| trade → | trades | p50 ms | p99 ms | how |",
        "|---|---:|---:|---:|---|",
        f"| visible in S3 (raw JSONL) | {len(s3_ms):,} of {n:,} | {fmt(pct(s3_ms, 0.5))} | {fmt(pct(s3_ms, 0.99))} | "
        "producer → Kafka → sink at its default policy (100 records / 10 s per partition); object first listed |",
        f"| queryable in DuckDB | {len(db_ms):,} of {n:,} | {fmt(pct(db_ms, 0.5))} | {fmt(pct(db_ms, 0.99))} | "
        f"`transform` + `load` back to back ({len(cycles)} cycles, median {fmt(statistics.median(cycles or [0]), 1)} s each); "
        "row first returned |",
    ]


# ---------------------------------------------------------------- memory over a long run


def fitted_drift(samples: list[tuple[float, float]], after: float) -> float:
    """Percent rise of the least-squares line through the (time, RSS) samples taken from ``after`` on,
    from its value at the first of them to its value at the last."""
    ts, rs = zip(*[(t, r) for t, r in samples if t >= after], strict=True)
    if len(ts) < 3:
        return float("nan")
    slope, intercept = statistics.linear_regression(ts, rs)
    start = intercept + slope * ts[0]
    return slope * (ts[-1] - ts[0]) / start * 100


def bench_soak(state: dict[str, Any], seconds: float, work: Path) -> list[str]:
    """The producer (simulator → Kafka, unpaced) and the sink (Kafka → S3, default 100 / 10 s)
    run together for ``seconds`` at full rate, as their CLIs; their RSS is sampled every second."""
    bootstrap = state["bootstrap_servers"]
    topic = f"bench-soak-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic)
    sim = Simulator(17400, rate=5_000_000, trades=10**12)
    env = pipeline_env(state, sim, topic, f"s3://{state['bucket']}/bench/soak-{uuid.uuid4().hex[:6]}")
    logs = {name: work / f"soak-{name}.log" for name in ("producer", "sink")}
    procs = {
        "producer": start_stage("producer", env, logs["producer"]),
        "sink": start_stage("consumer", env, logs["sink"]),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in procs}
    t0 = time.monotonic()
    try:
        while (t := time.monotonic() - t0) < seconds:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"soak: the {name} exited early; see {logs[name]}")
                samples[name].append((t, psutil.Process(proc.pid).memory_info().rss / 2**20))
            time.sleep(min(1.0, max(0.0, seconds - t)))
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)  # as Ctrl-C (SIGINT may be ignored in a background job)
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.close()
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": env["STOCKPIPE_KAFKA_GROUP_ID"]})
    parts = [TopicPartition(topic, p) for p in range(3)]
    in_kafka = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    committed = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    c.close()
    rates = {"producer": in_kafka / seconds, "sink": committed / seconds}
    lines = [
        "| process | records/s | RSS MB at 1 min | warm (20–30%) | half time (45–55%) | end (last 10%) | peak |"
        " end vs warm (medians) | drift (fitted, 20% → end) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ss in samples.items():

        def over(lo: float, hi: float, ss: list[tuple[float, float]] = ss) -> float:
            """Median RSS of the samples in [lo, hi) of the run (fractions of its length)."""
            near = [r for t, r in ss if lo * seconds <= t < hi * seconds] or [ss[-1][1]]
            return statistics.median(near)

        # Warm-up: buffers fill to their caps (the sink's max_buffered_records and librdkafka's
        # prefetch queue) while it falls behind the producer; drift is what grows after that.
        # RSS swings by tens of MB with the queues' fill level from one sample to the next, so each
        # point is the median of a tenth of the run, not one sample; the drift is a least-squares line
        # through every sample after the warm-up: its rise over that span, against its start.
        one = over(min(0.2, 45.0 / seconds), min(0.3, 75.0 / seconds))
        warm, half, end = over(0.2, 0.3), over(0.45, 0.55), over(0.9, 1.01)
        what = "stockpipe.producer (simulator → Kafka)" if name == "producer" else "stockpipe.consumer (Kafka → S3)"
        lines.append(
            f"| {what} | {fmt(rates[name])} | {fmt(one)} | {fmt(warm)} | {fmt(half)} | {fmt(end)} | "
            f"{fmt(max(r for _, r in ss))} | {(end - warm) / warm * 100:+.1f}% | {fitted_drift(ss, 0.2 * seconds):+.1f}% |"
        )
        print(f"  soak {name}: {[round(r) for _, r in ss]}", file=sys.stderr)
    return lines


def write_raw_lines(root: Path, n: int, days: int = 2, objects_per_day: int = 40) -> int:
    """Clean raw JSONL in the sink's layout (no dirty lines: pyarrow and DuckDB have no quarantine)."""
    rng = random.Random(11)
    syms = SYMBOLS.split(",")
    per_day = n // days
    size = 0
    for d in range(days):
        day = dt.date(2024, 3, 4) + dt.timedelta(days=d)
        base = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
        folder = root / f"raw.data/year={day:%Y}/month={day:%m}/day={day:%d}"
        folder.mkdir(parents=True)
        per_obj = per_day // objects_per_day
        for o in range(objects_per_day):
            lines = []
            for i in range(per_obj):
                k = o * per_obj + i
                ts = base + k * 80_000_000 // per_day
                lines.append(
                    f'{{"symbol":"{syms[k % len(syms)]}","price":{rng.uniform(10, 500):.4f},"volume":{rng.randint(1, 500)},'
                    f'"trade_ts":{ts},"conditions":["1","12"],"received_ts":{ts + 3},"source":"finnhub","schema_version":1,'
                    f'"kafka_partition":{d},"kafka_offset":{k}}}'
                )
            body = ("\n".join(lines) + "\n").encode()
            (folder / f"stock-data+{d}+{o:020}.jsonl").write_bytes(body)
            size += len(body)
    return size


PYARROW_ETL = """
import glob, json, sys, pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq
root = sys.argv[1]; rows = 0
for day in sorted(glob.glob(root + '/raw.data/year=*/month=*/day=*')):
    t = pa.concat_tables([pj.read_json(f) for f in sorted(glob.glob(day + '/*.jsonl'))])
    out = day.replace('raw.data', 'processed.data'); import os; os.makedirs(out, exist_ok=True)
    pq.write_table(t, out + '/part-00000.parquet', compression='zstd'); rows += t.num_rows
print(json.dumps({'rows': rows}))
"""

DUCKDB_ETL = """
import json, sys, duckdb
root = sys.argv[1]; con = duckdb.connect()
con.execute(f"COPY (SELECT *, year(make_timestamp(trade_ts * 1000)) AS year, month(make_timestamp(trade_ts * 1000)) AS month, day(make_timestamp(trade_ts * 1000)) AS day FROM read_json_auto('{root}/raw.data/*/*/*/*.jsonl')) TO '{root}/processed.data' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month, day), OVERWRITE_OR_IGNORE)")
print(json.dumps({'rows': con.execute(f"SELECT count(*) FROM read_parquet('{root}/processed.data/*/*/*/*.parquet')").fetchone()[0]}))
"""

RUST_ETL = """
import json, sys, stockpipe
root = 'file://' + sys.argv[1]
cfg = stockpipe.load_config(env={}, use_default_file=False)
s = stockpipe.transform(root, root, config=cfg, full=True)
print(json.dumps({'rows': s.rows, 'quarantined': s.quarantined}))
"""


def bench_jsonl_to_parquet(n: int, rounds: int, work: Path) -> list[Row]:
    src = work / "raw-src"
    size = write_raw_lines(src, n)
    contenders = {
        "stockpipe (Rust engine, shared rules)": [PY, "-c", RUST_ETL],
        "Glue job on local PySpark (shared rules)": [PY, str(ROOT / "glue/stockpipe_etl.py"), "--full", "true", "--input", "file://{d}", "--output", "file://{d}"],
        "pyarrow json reader + parquet writer (no rules)": [PY, "-c", PYARROW_ETL],
        "DuckDB COPY (no rules)": [PY, "-c", DUCKDB_ETL],
    }  # fmt: skip
    rows = {name: Row("raw JSONL → Parquet", name, note=f"{size / 1e6:,.0f} MB") for name in contenders}
    for _ in range(rounds):
        for name, cmd in contenders.items():
            d = work / "etl-run"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(src, d)
            args = [a.replace("{d}", str(d)) for a in cmd] + ([] if "stockpipe_etl" in " ".join(cmd) else [str(d)])
            run = measure(args)
            run.out.setdefault("rows", run.out.get("rows"))
            run.out["mb"] = size / 1e6
            rows[name].runs.append(run)
            print(f"  {name}: {run.wall_s:.1f}s {run.out}", file=sys.stderr)
    return list(rows.values())


# ---------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions() -> str:
    import confluent_kafka
    import duckdb
    import kafka
    import pyarrow
    import pyspark

    import stockpipe

    return (
        f"stockpipe {stockpipe.__version__}, Python {platform.python_version()}, confluent-kafka "
        f"{confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]}), kafka-python {kafka.__version__}, "
        f"pyarrow {pyarrow.__version__}, DuckDB {duckdb.__version__}, PySpark {pyspark.__version__}, Kafka 3.6.1 (1 broker), MinIO"
    )


def table(rows: list[Row], unit: str, count_key: str, rate_key: str | None = None) -> list[str]:
    base = rows[0]

    def rate(r: Run) -> float | None:
        active = r.out.get("active_s") or r.wall_s
        c = r.out.get(rate_key or count_key) or 0
        return c / active if active else None

    def cpu_per_m(r: Run) -> float | None:
        c = r.out.get(count_key) or 0
        return r.cpu_s / c * 1e6 if c else None

    def policy(r: Row) -> str:
        return r.contender.rsplit(", ", 1)[-1] if ", " in r.contender else ""

    def base_for(r: Row) -> Row:
        # Compare with stockpipe at the same setting (the sink rows differ by batch policy).
        return next((x for x in rows if x.contender.startswith("stockpipe") and policy(x) == policy(r)), base)

    lines = [
        f"| contender | {unit}/s (median) | stockpipe ÷ this | CPU-s per million | peak RSS MB | p50 / p99 ms | runs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r.med(rate)
        b = base_for(r).med(rate)
        lat = f"{fmt(r.med(lambda x: x.out.get('p50_ms')), 1)} / {fmt(r.med(lambda x: x.out.get('p99_ms')), 1)}"
        if "p50_ms" not in r.runs[0].out:
            lat = "–"
        lines.append(
            f"| {r.contender} | {fmt(m)} | {fmt(b / m if m else float('nan'), 1) if r is not base_for(r) else '1.0'}"
            f" | {fmt(r.med(cpu_per_m), 1)} | {fmt(r.med(lambda x: x.peak_rss_mb))} | "
            f"{lat} | {len(r.runs)} |"
        )
    return lines


def _default_linger_ms() -> int:
    from stockpipe import load_config

    return int(load_config(env={}, use_default_file=False).kafka.linger_ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, one round (a few minutes)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per stage (default 2, --quick 1)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="where to write the report ('-' for stdout)")
    ap.add_argument(
        "--stages",
        default="ws,latency,sink,etl,e2e,soak",
        help="comma separated: ws, latency, sink, etl, e2e, soak",
    )
    ap.add_argument(
        "--soak-seconds", type=float, default=None, help="length of the memory run (default 600, --quick 60)"
    )
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    # Every librdkafka producer (stockpipe's and the confluent-kafka contenders) lingers alike:
    # stockpipe's default unless the environment says otherwise.
    os.environ.setdefault("BENCH_LINGER_MS", str(_default_linger_ms()))
    n_ws = 100_000 if args.quick else 1_000_000
    n_sink = 50_000 if args.quick else 300_000
    n_etl = 200_000 if args.quick else 2_000_000
    soak_s = args.soak_seconds or (60.0 if args.quick else 600.0)
    stages = set(args.stages.split(","))
    unknown = stages - {"ws", "latency", "sink", "etl", "e2e", "soak"}
    if unknown:
        ap.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    started = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="stockpipe-bench-"))
    home = Path.home() / ".cache/stockpipe/bench-stack"
    state = stack_up(home) if stages & {"ws", "latency", "sink", "e2e", "soak"} else {}
    if state:
        warm_broker(state["bootstrap_servers"])
    sections: list[str] = []
    try:
        if "ws" in stages:
            print(f"WS → Kafka: {n_ws:,} trades × {rounds} rounds", file=sys.stderr)
            rows = bench_ws_to_kafka(state, n_ws, rounds)
            sections += [
                f"### WebSocket frames → Kafka acknowledged ({n_ws:,} trades, 8 symbols, 20 trades per frame)",
                "",
            ]
            sections += [*table(rows, "trades", "acked"), ""]
        if "latency" in stages:
            rate, secs = 10_000, (5 if args.quick else 20)
            print(f"latency at {rate} trades/s for {secs}s", file=sys.stderr)
            # Three rounds (one in quick mode): the median p99 is then one window's, not an average.
            lat_rounds = 1 if args.quick else max(rounds, 3)
            rows = bench_latency_at_rate(state, rate, secs, lat_rounds)
            sections += [
                f"### Frame → ack latency at a steady {rate:,} trades/s ({secs} s; linger.ms "
                f"{os.environ['BENCH_LINGER_MS']} for every librdkafka producer)",
                "",
            ]
            sections += [*table(rows, "trades", "acked"), ""]
        if "sink" in stages:
            print(f"Kafka → S3: {n_sink:,} records × {rounds} rounds", file=sys.stderr)
            rows = bench_kafka_to_s3(state, n_sink, 5 * n_sink, rounds, big_batch=10_000)
            sections += [
                f"### Kafka → S3 JSONL objects (3 partitions, SSE-S3; {n_sink:,} records at 100 / 10 s, "
                f"{5 * n_sink:,} at 10,000 / 10 s)",
                "",
            ]
            lines = table(rows, "records", "records", rate_key="bulk_records")
            lines[0] += " objects | S3 server CPU-s | cores in the busy window: S3 server / broker / contender |"
            lines[1] += "---:|---:|---:|"
            for i, r in enumerate(rows):
                cores = " / ".join(
                    fmt(r.med(lambda x, k=k: getattr(x, k)), 2) for k in ("server_cores", "broker_cores", "cores")
                )
                lines[i + 2] += (
                    f" {fmt(r.med(lambda x: x.out.get('objects')))} | {fmt(r.med(lambda x: x.server_cpu_s), 1)} |"
                    f" {cores} |"
                )
            sections += [*lines, ""]
        if "etl" in stages:
            print(f"JSONL → Parquet: {n_etl:,} rows × {rounds} rounds", file=sys.stderr)
            rows = bench_jsonl_to_parquet(n_etl, rounds, work)
            sections += [f"### Raw JSONL → Parquet ({n_etl:,} rows, {rows[0].note}, 2 days × 40 objects, zstd)", ""]
            sections += [*table(rows, "rows", "rows"), ""]
        if "e2e" in stages:
            rate, secs = 1_000, (20 if args.quick else 60)
            print(f"end to end at {rate:,} trades/s for {secs} s", file=sys.stderr)
            lines = bench_end_to_end(state, rate, secs, work)
            sections += [f"### End to end at a steady {rate:,} trades/s ({secs} s, 8 symbols)", "", *lines, ""]
        if "soak" in stages:
            print(f"memory over {soak_s:.0f} s at full rate", file=sys.stderr)
            lines = bench_soak(state, soak_s, work)
            sections += [
                f"### Memory over {f'{soak_s / 60:.0f} minutes' if soak_s >= 120 else f'{soak_s:.0f} s'} at full rate"
                " (producer and sink together, RSS every second)",
                "",
                *lines,
                "",
            ]
    finally:
        if state:
            stack_down(state)
        shutil.rmtree(work, ignore_errors=True)
    took = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    report = [
        "# Benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine()} with `python bench/run.py{' --quick' if args.quick else ''}` "
        f"({rounds} round(s), contenders alternating, medians; {took / 60:.0f} min).",
        f"Versions: {versions()}.",
        "",
        "Rates count the busy window (first input → last acknowledgement or object) where the contender reports it, "
        "else the process's wall time. CPU-seconds and peak RSS are the contender's process tree. Ratios are "
        "stockpipe's rate divided by the contender's (above 1: stockpipe is faster).",
        "",
        *sections,
    ]
    notes = HERE / "NOTES.md"
    if notes.exists():  # the maintained reading of the numbers: what limited each result, targets
        report += ["", notes.read_text().rstrip()]
    text = "\n".join(report) + "\n"
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
