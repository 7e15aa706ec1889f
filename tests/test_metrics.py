"""Prometheus metrics of the producer and the sink, scraped while they run against the real stack."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Stack, unique_topic
from .ingest_helpers import Simulator

pytestmark = [pytest.mark.kafka]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Every sample by name and labels (``name{k="v"}``), through the reference parser of the format."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_producer_and_sink_serve_their_counters_while_they_run(stack: Stack, tmp_path: Path) -> None:
    topic = unique_topic("metrics")
    env = dict(
        stack.env,
        STOCKPIPE_KAFKA_TOPIC=topic,
        STOCKPIPE_KAFKA_DLQ_TOPIC=f"{topic}-dlq",
        STOCKPIPE_KAFKA_GROUP_ID=f"g-{topic}",
        STOCKPIPE_SINK_OUTPUT=f"file://{tmp_path}/lake",
    )
    ports = {"producer": _free_port(), "sink": _free_port()}
    started = time.time()
    sim = Simulator("--symbols", "AAPL,MSFT,NVDA", "--rate", "400", "--duration", "40")
    procs = {
        "producer": subprocess.Popen(
            [sys.executable, "-m", "stockpipe.producer", "--ws-url", sim.url, "--api-key", "k",
             "--symbols", "AAPL,MSFT,NVDA", "--duration", "12", "--metrics-address", f"127.0.0.1:{ports['producer']}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ),
        "sink": subprocess.Popen(
            [sys.executable, "-m", "stockpipe.consumer", "--batch-seconds", "1", "--duration", "16",
             "--metrics-address", f"127.0.0.1:{ports['sink']}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ),
    }  # fmt: skip
    seen: dict[str, list[dict[str, float]]] = {"producer": [], "sink": []}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
            for stage, port in ports.items():
                if procs[stage].poll() is None:
                    try:
                        seen[stage].append(scrape(port))
                    except (urllib.error.URLError, ConnectionError):
                        pass  # not listening yet, or the run just ended
            time.sleep(0.5)
        outs = {stage: p.communicate(timeout=60) for stage, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        sim.stop()
    for stage, (_, err) in outs.items():
        assert procs[stage].returncode == 0, err
        assert f"{stage}: Prometheus metrics at http://127.0.0.1:{ports[stage]}/metrics" in err

    # Counters only grow, scrape after scrape, and end at or below what the run reports.
    producer, sink = seen["producer"], seen["sink"]
    assert len(producer) >= 5 and len(sink) >= 5
    acked = [s["stockpipe_producer_records_acked_total"] for s in producer]
    assert acked == sorted(acked) and acked[-1] > 1000
    summary = outs["producer"][1].strip().splitlines()[-1]
    assert int(summary.split("acked ")[1].split(",")[0]) >= acked[-1]
    written = [s["stockpipe_sink_records_written_total"] for s in sink]
    assert written == sorted(written) and written[-1] > 0

    last = producer[-1]
    assert last["stockpipe_producer_frames_total"] > 0 and last['stockpipe_build_info{version="0.1.0"}'] == 1
    assert time.time() - 60 < last["stockpipe_producer_last_ack_timestamp_seconds"] <= time.time()
    assert last["stockpipe_producer_kafka_ready"] == 1
    # The acknowledgement latency is a histogram: cumulative buckets ending in +Inf = count.
    buckets = sorted(
        (float(k.split('le="')[1].rstrip('"}')), v)
        for k, v in last.items()
        if k.startswith("stockpipe_producer_ack_latency_seconds_bucket")
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), last["stockpipe_producer_ack_latency_seconds_count"])
    assert last["stockpipe_producer_ack_latency_seconds_count"] >= last["stockpipe_producer_records_acked_total"]
    assert 0 < last["stockpipe_producer_ack_latency_seconds_sum"]

    # When the first record was read and a batch last written: in the run, in that order.
    first_read = sink[-1]["stockpipe_sink_first_record_timestamp_seconds"]
    last_write = sink[-1]["stockpipe_sink_last_write_timestamp_seconds"]
    assert started < first_read < last_write <= time.time(), (started, first_read, last_write)
    assigned = max(s["stockpipe_sink_partitions_assigned"] for s in sink)
    assert assigned == 3
    with_lag = [s for s in sink if any(k.startswith("stockpipe_sink_partition_lag_records{") for k in s)]
    assert with_lag, "lag by partition"
    for s in with_lag:
        by_partition = sum(v for k, v in s.items() if k.startswith("stockpipe_sink_partition_lag_records{"))
        assert by_partition == s["stockpipe_sink_lag_records"]

    # The run is over: nothing listens any more.
    for port in ports.values():
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            scrape(port)


def test_a_metrics_address_that_cannot_be_used_is_one_line(stack: Stack, tmp_path: Path) -> None:
    env = dict(stack.env, STOCKPIPE_SINK_OUTPUT=f"file://{tmp_path}/lake")
    env.pop("FINNHUB_API_KEY", None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["sink", "--metrics-address", "9464"], "[sink] metrics_address = '9464' (from flag --metrics-address): "
             "expected HOST:PORT"),
            (["produce", "--metrics-address", "h:0"], "[producer] metrics_address = 'h:0' (from flag "
             "--metrics-address): expected HOST:PORT"),
            (["sink", "--metrics-address", f"127.0.0.1:{port}", "--duration", "5"],
             f"[sink] metrics_address = \"127.0.0.1:{port}\": cannot listen there: Address already in use"),
        ]  # fmt: skip
        for args, needle in cases:
            done = subprocess.run(
                [sys.executable, "-m", "stockpipe", *args], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 2, done.stderr
            lines = [line for line in done.stderr.splitlines() if line.strip() and "Prometheus metrics at" not in line]
            assert len(lines) == 1 and needle in lines[0], done.stderr
