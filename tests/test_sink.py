"""Kafka → S3 / files: exactly once across crashes, outages and rebalances, checked offset by offset."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from stockpipe import load_config
from stockpipe.dev import stack as devstack

from .conftest import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.s3]
DAY_MS = 86_400_000
MIDNIGHT = 1_672_531_200_000  # 2023-01-01T00:00:00Z


def make_topic(stack: Stack, partitions: int = 3, name: str | None = None) -> str:
    from stockpipe import _native

    topic = name or f"sink-{uuid.uuid4().hex[:8]}"
    kafka = load_config(env=stack.env, use_default_file=False).kafka
    kafka.topic = topic
    _native.ensure_topics(json.dumps(kafka.__dict__), [(topic, partitions)], 30.0)
    return topic


def produce(
    stack: Stack, topic: str, n: int, *, start_ts: int = MIDNIGHT - 60_000, step_ms: int = 1, bad_every: int = 0
) -> None:
    """n trade records over 8 symbols, times crossing midnight; every `bad_every`-th is not JSON."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": stack.bootstrap, "linger.ms": 20, "enable.idempotence": True, "acks": "all"})
    symbols = ["AAPL", "MSFT", "AMZN", "NVDA", "BINANCE:BTCUSDT", "OANDA:EUR_USD", "TSLA", "META"]
    for i in range(n):
        sym = symbols[i % len(symbols)]
        if bad_every and i % bad_every == bad_every - 1:
            value = b"{broken"
        else:
            ts = start_ts + i * step_ms
            value = (
                f'{{"symbol":"{sym}","price":{100 + i % 1000 / 1000},"volume":{i % 50},"trade_ts":{ts},'
                f'"conditions":null,"received_ts":{ts + 5},"source":"finnhub","schema_version":1}}'
            ).encode()
        while True:
            try:
                p.produce(topic, key=sym.encode(), value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0


def sink_env(stack: Stack, topic: str, output: str, **extra: str) -> dict[str, str]:
    env = dict(
        stack.env,
        STOCKPIPE_KAFKA_TOPIC=topic,
        STOCKPIPE_KAFKA_GROUP_ID=f"g-{topic}",
        STOCKPIPE_KAFKA_DLQ_TOPIC=f"{topic}-dlq",
        STOCKPIPE_SINK_OUTPUT=output,
        STOCKPIPE_SINK_STATUS_INTERVAL="0",
        # A killed sink's partitions move on after 6 s instead of the default 45 s.
        STOCKPIPE_KAFKA_LIBRDKAFKA="session.timeout.ms=6000,heartbeat.interval.ms=1000",
    )
    env.update(extra)
    return env


def start_sink(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stockpipe.consumer", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Output:
    """Reads what a sink wrote, from S3 or from a directory."""

    def __init__(self, stack: Stack, kind: str, tmp: Path) -> None:
        self.stack, self.kind = stack, kind
        name = uuid.uuid4().hex[:8]
        if kind == "s3":
            self.bucket = stack.state["bucket"]
            self.prefix = f"test-{name}"
            self.uri = f"s3://{self.bucket}/{self.prefix}"
        else:
            self.root = tmp / f"out-{name}"
            self.uri = f"file://{self.root}"

    def objects(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        if self.kind == "s3":
            s3 = self.stack.s3()
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + "/raw.data/"
            ):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1 :]
                    out[key] = s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
        else:
            base = self.root / "raw.data"
            for path in sorted(base.rglob("*")) if base.exists() else []:
                if path.is_file() and not path.name.startswith(".tmp-"):
                    out[str(path.relative_to(self.root))] = path.read_bytes()
        return out

    def put(self, key: str, body: bytes) -> None:
        if self.kind == "s3":
            self.stack.s3().put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=body)
        else:
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)

    def claims(self) -> dict[str, bytes]:
        if self.kind == "s3":
            s3 = self.stack.s3()
            listed = s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/_stockpipe/claims/")
            return {
                o["Key"]: s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
                for o in listed.get("Contents", [])
            }
        base = self.root / "_stockpipe" / "claims"
        return {str(p): p.read_bytes() for p in sorted(base.rglob("*.json")) if not p.name.startswith(".tmp-")}

    def check_exactly_once(
        self, expected_per_partition: dict[int, int], bad: set[tuple[int, int]] | None = None
    ) -> int:
        """Every (partition, offset) in exactly one object, in order, under its trade date."""
        seen: dict[tuple[int, int], str] = {}
        for key, body in self.objects().items():
            if key.endswith(".gz"):
                body = gzip.decompress(body)
            offsets = []
            for line in body.decode().splitlines():
                rec = json.loads(line)
                ident = (rec["kafka_partition"], rec["kafka_offset"])
                assert ident not in seen, f"{ident} in {key} and {seen[ident]}"
                seen[ident] = key
                offsets.append(rec["kafka_offset"])
                day = time.strftime("year=%Y/month=%m/day=%d", time.gmtime(rec["trade_ts"] / 1000))
                assert key.startswith(f"raw.data/{day}/"), (key, rec["trade_ts"])
            assert offsets == sorted(offsets), key
        wanted = {(p, o) for p, n in expected_per_partition.items() for o in range(n)} - (bad or set())
        missing = wanted - set(seen)
        extra = set(seen) - wanted
        assert not missing, f"{len(missing)} records missing, e.g. {sorted(missing)[:5]}"
        assert not extra, f"unexpected records {sorted(extra)[:5]}"
        return len(seen)


def partition_sizes(stack: Stack, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "sizes"})
    md = c.list_topics(topic, timeout=10)
    sizes = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.topics[topic].partitions}
    c.close()
    return sizes


def wait_caught_up(out: Output, sizes: dict[int, int], timeout: float = 120) -> None:
    total = sum(sizes.values())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = sum(len(b.splitlines()) for b in out.objects().values())
        if count >= total:
            return
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_a_million_records_land_exactly_once(stack: Stack, tmp_path: Path, kind: str) -> None:
    topic = make_topic(stack)
    n = 1_000_000
    produce(stack, topic, n, step_ms=200)  # ~2.3 days of trade time from 23:59: four dates
    out = Output(stack, kind, tmp_path)
    cfg = load_config(env=sink_env(stack, topic, out.uri), use_default_file=False)
    cfg.sink.batch_size, cfg.sink.batch_seconds = 20_000, 5
    from stockpipe import Sink

    stats = None
    sizes = partition_sizes(stack, topic)
    for _ in range(6):
        stats = Sink(cfg).run(duration=20)
        if sum(len(b.splitlines()) for b in out.objects().values()) >= n:
            break
    assert stats is not None
    assert out.check_exactly_once(sizes) == n
    first, last = MIDNIGHT - 60_000, MIDNIGHT - 60_000 + (n - 1) * 200
    fmt = "year=%Y/month=%m/day=%d"
    days = {time.strftime(fmt, time.gmtime(t / 1000)) for t in range(first, last + DAY_MS, DAY_MS)}
    days.add(time.strftime(fmt, time.gmtime(last / 1000)))
    assert {"/".join(k.split("/")[1:4]) for k in out.objects()} == days
    if kind == "s3":
        s3 = stack.s3()
        key = out.prefix + "/" + next(iter(out.objects()))
        assert s3.head_object(Bucket=out.bucket, Key=key)["ServerSideEncryption"] == "AES256"


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_a_quiet_partition_is_flushed_by_the_timer(stack: Stack, tmp_path: Path, kind: str) -> None:
    topic = make_topic(stack, partitions=1)
    out = Output(stack, kind, tmp_path)
    proc = start_sink(sink_env(stack, topic, out.uri), "--batch-seconds", "10")
    time.sleep(6)  # joined the group and is waiting
    produce(stack, topic, 5, start_ts=1_700_000_000_000)
    produced_at = time.monotonic()
    while not out.objects() and time.monotonic() - produced_at < 15:
        time.sleep(0.2)
    elapsed = time.monotonic() - produced_at
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert out.objects(), "no object within 15 s"
    assert elapsed <= 11.0, f"object after {elapsed:.1f}s"
    assert out.check_exactly_once({0: 5}) == 5


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_a_claimed_run_is_rewritten_batch_by_batch(stack: Stack, tmp_path: Path, kind: str) -> None:
    """A sink died after claiming a run of three batches (offsets 0..=449) and before writing it:
    the next sink writes exactly those three batches, then claims its own backlog in runs."""
    topic = make_topic(stack, partitions=1)
    out = Output(stack, kind, tmp_path)
    produce(stack, topic, 20_000, start_ts=MIDNIGHT + 1_000)
    cuts = [[0, 49], [50, 299], [300, 449]]
    claim = {"topic": topic, "partition": 0, "start": 0, "end": 449, "objects": [], "records": 450, "batches": cuts}
    out.put(f"_stockpipe/claims/{topic}/00000/{0:020}.json", json.dumps(claim).encode())
    proc = start_sink(sink_env(stack, topic, out.uri), "--batch-size", "100", "--batch-seconds", "1")
    wait_caught_up(out, {0: 20_000})
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert out.check_exactly_once({0: 20_000}) == 20_000
    extents = sorted(tuple(int(x) for x in k.rsplit("+", 1)[1].split(".")[0].split("-")) for k in out.objects())
    assert extents[:3] == [tuple(c) for c in cuts]
    # Then batches of 100 (the last one closed by the timer with the remaining 50).
    assert [e - s + 1 for s, e in extents[3:]] == [100] * 195 + [50]
    runs = [json.loads(b) for k, b in out.claims().items() if not k.endswith(f"{0:020}.json")]
    assert any(len(c.get("batches", [])) > 1 for c in runs), "a backlog is claimed in runs"
    for c in runs:
        batches = c.get("batches") or [[c["start"], c["end"]]]
        assert (batches[0][0], batches[-1][1]) == (c["start"], c["end"])
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(batches))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_kill_9_at_random_moments_keeps_exactly_once(stack: Stack, tmp_path: Path, kind: str) -> None:
    topic = make_topic(stack)
    out = Output(stack, kind, tmp_path)
    env = sink_env(stack, topic, out.uri)
    rng = random.Random(7)
    produced = 0
    for _round in range(5):
        produce(stack, topic, 20_000, start_ts=MIDNIGHT - 10_000 + produced * 1, step_ms=1)
        produced += 20_000
        proc = start_sink(env, "--batch-size", "100", "--batch-seconds", "2")
        time.sleep(rng.uniform(3.0, 8.0))
        proc.kill()
        proc.wait()
    proc = start_sink(env, "--batch-size", "500", "--batch-seconds", "1")
    sizes = partition_sizes(stack, topic)
    wait_caught_up(out, sizes, timeout=180)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert out.check_exactly_once(sizes) == produced


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_s3_outage_of_30_seconds_loses_and_duplicates_nothing(stack: Stack, tmp_path: Path) -> None:
    topic = make_topic(stack)
    out = Output(stack, "s3", tmp_path)
    env = sink_env(stack, topic, out.uri)
    proc = start_sink(env, "--batch-size", "200", "--batch-seconds", "1")
    produce(stack, topic, 30_000, start_ts=1_700_000_000_000)
    time.sleep(5)
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.dev.home = str(stack.home)
    devstack.stop_service(cfg, "s3")
    rss_before = rss_kb(proc.pid)
    produce(stack, topic, 100_000, start_ts=1_700_000_100_000)
    time.sleep(30)
    rss_during = rss_kb(proc.pid)
    devstack.start_service(cfg, "s3")
    stack.state = json.loads((stack.home / "stack.json").read_text())
    sizes = partition_sizes(stack, topic)
    wait_caught_up(out, sizes, timeout=180)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert out.check_exactly_once(sizes) == 130_000
    assert "failed" in err  # the outage was seen and retried
    assert rss_during < rss_before + 200_000, (rss_before, rss_during)  # paused: no unbounded buffering


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_two_sinks_in_one_group_one_killed(stack: Stack, tmp_path: Path, kind: str) -> None:
    topic = make_topic(stack)
    out = Output(stack, kind, tmp_path)
    env = sink_env(stack, topic, out.uri)
    produce(stack, topic, 40_000, start_ts=1_700_000_000_000)
    a = start_sink(env, "--batch-size", "100", "--batch-seconds", "1")
    b = start_sink(env, "--batch-size", "100", "--batch-seconds", "1")
    time.sleep(8)
    a.kill()
    a.wait()
    produce(stack, topic, 40_000, start_ts=1_700_000_100_000)
    sizes = partition_sizes(stack, topic)
    wait_caught_up(out, sizes, timeout=180)
    b.send_signal(signal.SIGTERM)
    b.communicate(timeout=60)
    assert out.check_exactly_once(sizes) == 80_000


def test_invalid_records_go_to_the_dead_letter_topic(stack: Stack, tmp_path: Path) -> None:
    from .conftest import consume_all

    topic = make_topic(stack, partitions=1)
    produce(stack, topic, 100, start_ts=1_700_000_000_000, bad_every=10)
    out = Output(stack, "file", tmp_path)
    cfg = load_config(env=sink_env(stack, topic, out.uri), use_default_file=False)
    from stockpipe import Sink

    stats = Sink(cfg).run(duration=8)
    assert stats.dead_letters == 10
    bad = {(0, o) for o in range(9, 100, 10)}
    assert out.check_exactly_once({0: 100}, bad=bad) == 90
    letters = consume_all(stack.bootstrap, f"{topic}-dlq", expected=10)
    assert {json.loads(m.value())["reason"] for m in letters} == {"not_json"}


def test_bad_output_uri_is_a_config_error(stack: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stockpipe.consumer", "--output", "ftp://x"],
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "[sink] output" in done.stderr


@pytest.mark.parametrize(
    ("problem", "reason"), [("no such bucket", "(NoSuchBucket)"), ("wrong secret key", "(SignatureDoesNotMatch)")]
)
def test_an_s3_output_that_refuses_the_sink_stops_it_at_start(stack: Stack, problem: str, reason: str) -> None:
    topic = make_topic(stack, partitions=1)
    bucket = f"missing-{uuid.uuid4().hex[:8]}" if problem == "no such bucket" else stack.state["bucket"]
    env = sink_env(stack, topic, f"s3://{bucket}/p")
    if problem == "wrong secret key":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    done = subprocess.run(
        [sys.executable, "-m", "stockpipe.consumer"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"python -m stockpipe.consumer: error: sink: cannot write to s3://{bucket}/p: "), line
    assert line.endswith(reason), line


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_sink_stopped_while_its_writes_fail_retries_without_spinning_and_leaves_the_rest_to_the_next(
    stack: Stack, tmp_path: Path
) -> None:
    topic = make_topic(stack, partitions=1)
    out = Output(stack, "file", tmp_path)
    env = sink_env(stack, topic, out.uri)
    proc = start_sink(env, "--batch-size", "10", "--batch-seconds", "1")
    produce(stack, topic, 10, start_ts=1_700_000_000_000)
    deadline = time.monotonic() + 60
    while len(out.objects()) < 1:
        assert time.monotonic() < deadline and proc.poll() is None, "the first batch was never written"
        time.sleep(0.2)
    # Break the store under the running sink: its claims directory becomes a file.
    claims = out.root / "_stockpipe"
    claims.rename(out.root / "_stockpipe.moved")
    claims.write_text("")
    produce(stack, topic, 25, start_ts=1_700_000_001_000)
    time.sleep(3)  # the batches close and their first writes fail
    proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    before = cpu_seconds(proc.pid)
    time.sleep(5)
    busy = cpu_seconds(proc.pid) - before
    assert busy < 1.5, f"{busy:.1f} CPU-s in 5 s while waiting to retry"  # a spinning loop uses ~5
    _, err = proc.communicate(timeout=60)  # gives up 30 s after the stop
    assert proc.returncode == 1, err[-2000:]
    assert "not written at stop 25 (left in Kafka)" in err and "they stay in Kafka, uncommitted" in err
    claims.unlink()
    (out.root / "_stockpipe.moved").rename(claims)
    again = start_sink(env, "--batch-size", "10", "--batch-seconds", "1", "--duration", "8")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    assert out.check_exactly_once({0: 35}) == 35


def test_a_sink_started_before_its_topic_exists_says_so_and_writes_it_once_it_appears(
    stack: Stack, tmp_path: Path
) -> None:
    topic = f"sink-late-{uuid.uuid4().hex[:8]}"
    out = Output(stack, "file", tmp_path)
    proc = start_sink(sink_env(stack, topic, out.uri), "--batch-size", "10", "--batch-seconds", "1")
    time.sleep(4)
    make_topic(stack, 3, name=topic)
    produce(stack, topic, 200, start_ts=1_700_000_000_000)
    sizes = partition_sizes(stack, topic)
    wait_caught_up(out, sizes, timeout=90)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert f"sink: topic {topic} does not exist yet; waiting for it" in err
    assert out.check_exactly_once(sizes) == 200


def test_status_line_reports_lag_per_partition(stack: Stack, tmp_path: Path) -> None:
    from stockpipe import Sink

    topic = make_topic(stack)
    produce(stack, topic, 3000, start_ts=1_700_000_000_000)
    out = Output(stack, "file", tmp_path)
    cfg = load_config(env=sink_env(stack, topic, out.uri), use_default_file=False)
    cfg.sink.batch_size, cfg.sink.status_interval = 1_000_000, 0.5  # hold everything: lag stays visible
    cfg.sink.batch_seconds, cfg.sink.max_buffered_records = 60, 1_000_000
    seen: list[dict[str, float]] = []
    Sink(cfg).run(duration=10, status=lambda s: seen.append(dict(s, at=time.monotonic())))
    # While everything is held the lag is the whole topic; the final report, after the drain, may be 0.
    held = [s for s in seen if s.get("lag") == 3000]
    assert held, [s.get("lag") for s in seen]
    last = held[-1]
    per_partition = {k: v for k, v in last.items() if k.startswith("lag_p")}
    assert set(per_partition) == {"lag_p0", "lag_p1", "lag_p2"}
    assert sum(per_partition.values()) == 3000
    from stockpipe.consumer import format_status

    assert "p0=" in format_status(last, {}, 1.0) and "p2=" in format_status(last, {}, 1.0)
    # The gauges keep up with the reports: a second apart, the age of the oldest held record has moved.
    later = [(a, b) for a in held for b in held if b["at"] - a["at"] >= 1.0]
    assert later, [(s.get("lag"), s["at"]) for s in seen]
    assert all(b["oldest_buffered_ms"] > a["oldest_buffered_ms"] for a, b in later), [
        (s["at"], s["oldest_buffered_ms"]) for s in held
    ]
