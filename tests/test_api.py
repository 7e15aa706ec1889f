"""The Python API from threads: a run stopped from another thread, and runs still going at exit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import stockpipe
from stockpipe import Producer, Sink, load_config
from stockpipe.simulator import run_simulator

from .conftest import Stack, unique_topic
from .ingest_helpers import Simulator

pytestmark = [pytest.mark.kafka]


def _pipeline_config(stack: Stack, lake: Path) -> stockpipe.Config:
    cfg = load_config(env=dict(stack.env, STOCKPIPE_SINK_OUTPUT=f"file://{lake}"), use_default_file=False)
    cfg.kafka.topic = unique_topic("api")
    cfg.kafka.dlq_topic = f"{cfg.kafka.topic}-dlq"
    cfg.kafka.group_id = f"g-{cfg.kafka.topic}"
    cfg.sink.batch_seconds = 1.0
    return cfg


def _lines(lake: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in lake.rglob("*.jsonl"))


def test_runs_on_threads_stop_when_asked_and_lose_nothing(stack: Stack, tmp_path: Path) -> None:
    cfg = _pipeline_config(stack, tmp_path / "lake")
    results: dict[str, Any] = {}
    ready = threading.Event()
    stop_sim = stockpipe.StopHandle()

    def on_ready(address: str) -> None:
        cfg.finnhub.ws_url, cfg.finnhub.api_key = f"ws://{address}", "any"
        ready.set()

    sim = dataclasses.replace(cfg.simulate, port=0, rate=500.0, symbols=["AAPL", "MSFT"])
    threads = {
        "sim": threading.Thread(target=lambda: results.update(sim=run_simulator(sim, on_ready=on_ready, stop=stop_sim)))
    }
    threads["sim"].start()
    assert ready.wait(10)
    cfg.finnhub.symbols = ["AAPL", "MSFT"]
    producer, sink = Producer(cfg), Sink(cfg)
    threads["producer"] = threading.Thread(target=lambda: results.update(producer=producer.run()))
    threads["sink"] = threading.Thread(target=lambda: results.update(sink=sink.run()))
    threads["producer"].start()
    threads["sink"].start()
    time.sleep(6)

    # The simulator first, so the producer has read every trade sent; then the producer, so
    # every trade is acknowledged; then the sink, once it has written all of them.
    started = time.monotonic()
    stop_sim.stop()
    threads["sim"].join(15)
    producer.stop()
    threads["producer"].join(15)
    acked = results["producer"].acked
    deadline = time.monotonic() + 30
    while _lines(tmp_path / "lake") < acked and time.monotonic() < deadline:
        time.sleep(0.2)
    sink.stop()
    threads["sink"].join(30)
    assert not any(t.is_alive() for t in threads.values())
    assert time.monotonic() - started < 40

    assert stop_sim.stopped and not results["producer"].interrupted
    assert results["sim"]["trades_sent"] == acked > 500
    assert results["sink"].records_written == _lines(tmp_path / "lake") == acked

    # A stop asked for before a run stops that run at once; the one after it runs again.
    sink.stop()
    started = time.monotonic()
    assert sink.run(duration=60).records_written == 0
    assert time.monotonic() - started < 20
    assert sink.run(duration=0.5).records_written == 0


EXITS_WITH_RUNS_GOING = """
import sys, threading, time, logging
logging.basicConfig(level=logging.INFO)
from stockpipe import Producer, Sink, load_config

cfg = load_config(use_default_file=False)
cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = sys.argv[1], "any", ["AAPL"]
sink = Sink(cfg)


def say(line: str) -> None:
    sys.stdout.write(line + "\\n")  # one write: the threads' lines do not interleave
    sys.stdout.flush()


threading.Thread(target=lambda: say(f"producer acked {Producer(cfg).run().acked}"), daemon=True).start()
threading.Thread(target=lambda: say(f"sink wrote {sink.run().records_written}"), daemon=True).start()
time.sleep(6)
say("main returns")
"""


def test_runs_left_going_at_exit_are_stopped_and_flushed(stack: Stack, tmp_path: Path) -> None:
    cfg = _pipeline_config(stack, tmp_path / "lake")
    env = dict(
        stack.env,
        STOCKPIPE_SINK_OUTPUT=f"file://{tmp_path / 'lake'}",
        STOCKPIPE_KAFKA_TOPIC=cfg.kafka.topic,
        STOCKPIPE_KAFKA_DLQ_TOPIC=cfg.kafka.dlq_topic,
        STOCKPIPE_KAFKA_GROUP_ID=cfg.kafka.group_id,
    )
    sim = Simulator("--rate", "300")
    try:
        done = subprocess.run(
            [sys.executable, "-c", EXITS_WITH_RUNS_GOING, sim.url],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        sim.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FATAL" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "stopping 2 run(s) still in progress before exit" in done.stderr
    # Both threads returned their counters after main returned: nothing was torn down mid-run.
    out = done.stdout.splitlines()
    assert out[0] == "main returns", done.stdout
    acked = int(next(line for line in out if line.startswith("producer acked")).split()[-1])
    assert acked > 0 and any(line.startswith("sink wrote") for line in out), done.stdout
