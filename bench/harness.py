"""How one contender is measured and reported: its process tree's CPU and peak RSS, the S3 server's
and the brokers' cores over its busy window, medians and ratios into Markdown tables."""

from __future__ import annotations

import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PY = sys.executable
SYMBOLS = "AAPL,MSFT,AMZN,NVDA,TSLA,META,GOOG,BINANCE:BTCUSDT"


def stop_all(procs: list[subprocess.Popen[Any]], timeout: float) -> None:
    """SIGTERM to each process in order (as Ctrl-C: SIGINT may be ignored in a background job), then
    waits for each up to ``timeout`` seconds and kills what is still running."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def fitted_drift(samples: list[tuple[float, float]], after: float) -> float:
    """Percent rise of the least-squares line through the (time, RSS) samples taken from ``after`` on,
    from its value at the first of them to its value at the last."""
    ts, rs = zip(*[(t, r) for t, r in samples if t >= after], strict=True)
    if len(ts) < 3:
        return float("nan")
    slope, intercept = statistics.linear_regression(ts, rs)
    start = intercept + slope * ts[0]
    return slope * (ts[-1] - ts[0]) / start * 100


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
