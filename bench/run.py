"""stockpipe benchmarks, side by side: ``python bench/run.py [--quick] [--out BENCHMARKS.md]``.

Every stage runs its contenders in one run, on the same broker, the same S3 server and the same
input, alternating contenders over ``--rounds`` rounds; the table reports medians and ratios to
stockpipe. Each contender is its own process, so its CPU seconds and peak RSS are its own; the S3
server's CPU is sampled too. Inputs come from stockpipe's simulator (same seed for everyone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness import HERE, ROOT, fmt, machine, table, versions
from services import stack_down, stack_up, warm_broker
from stages.ingest import bench_latency_at_rate, bench_ws_to_kafka
from stages.pipeline import bench_end_to_end, bench_soak
from stages.sink import bench_kafka_to_s3
from stages.sink_lag import bench_sink_lag
from stages.transform import bench_jsonl_to_parquet


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
            lag_s, lag_rates = (5 if args.quick else 20), [1_000.0, 10_000.0]
            print(f"Kafka → S3 lag: {lag_s} s at each of {lag_rates} records/s × {rounds} rounds", file=sys.stderr)
            lines = bench_sink_lag(state, lag_rates, lag_s, rounds)
            sections += [
                f"### Kafka → S3 lag at a steady rate (100 / 10 s; {lag_s} s of records keyed by 8 symbols over 3 "
                "partitions; each record from its production to its object stored)",
                "",
                "A record's lag is its object's `LastModified` (the S3 server's clock) minus the time it was produced; "
                f"after the measured {lag_s} s, records keep coming at up to 1,000/s until the contender has committed "
                "every measured one, so no batch of them waits for the 10 s timer. Each percentile is the upper median "
                "of the runs' (of two, the worse). The ratio column is the contender's lag over stockpipe's (above 1: "
                "stockpipe's is lower).",
                "",
                *lines,
                "",
            ]
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
