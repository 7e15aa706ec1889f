"""The whole pipeline: trade → visible in S3 → queryable in DuckDB, and memory over a long run."""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from harness import fitted_drift, fmt, pct, stop_all
from services import Simulator, ensure_topic, pipeline_env, start_stage


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
        stop_all(procs[::-1], 60)
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
        stop_all(list(procs.values()), 60)
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
