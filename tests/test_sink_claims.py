"""The sink's claims under the interleavings that broke them: rebalances of paused partitions, claims
larger than the buffer, records gone from Kafka, settings changed between a crash and the restart,
conflicting conditional writes and topics with offsets a consumer never sees. Each run ends with the
claims chain checked: contiguous, non-overlapping, every object inside exactly one claim."""

from __future__ import annotations

import gzip
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from stockpipe.dev import audit

from .conftest import Stack
from .test_sink import MIDNIGHT, Output, make_topic, partition_sizes, produce, sink_env, wait_caught_up

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


def start_sink(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """A sink whose log goes to a file (a pipe nobody reads would block a verbose sink); `stop` reads it."""
    log = tempfile.NamedTemporaryFile("w+", prefix="sink-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockpipe.consumer", *args], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc


def log_of(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    return log_of(proc)


def check_claims_chain(out: Output, topic: str) -> int:
    """The claims chain as the fault suite checks it (contiguous, every object one batch of one claim);
    returns how many claims the topic has."""
    claims = [json.loads(body) for body in out.claims().values()]
    problems = audit.claims_chain_problems(claims, list(out.objects()), topic)
    assert not problems, problems[:5]
    return sum(c["topic"] == topic for c in claims)


def put_claim(out: Output, topic: str, start: int, end: int, records: int, objects: list[str] | None = None) -> None:
    claim = {"topic": topic, "partition": 0, "start": start, "end": end, "objects": objects or [], "records": records}
    out.put(f"_stockpipe/claims/{topic}/00000/{start:020}.json", json.dumps(claim).encode())


def test_a_partition_paused_when_revoked_is_read_again_after_the_rebalance(stack: Stack, tmp_path: Path) -> None:
    """librdkafka keeps a partition the application paused paused across a revoke and a new assignment.
    S3 refuses every PUT (503) from the start, so the first sink pauses every partition (its writes
    fail); a second sink joins and dies. Once PUTs work again, the first sink must read and write
    every partition."""
    from stockpipe.dev.faults import FaultProxy

    topic = make_topic(stack)
    out = Output(stack, "s3", tmp_path)
    produce(stack, topic, 6_000, start_ts=1_700_000_000_000)
    proxy = FaultProxy(int(stack.state["s3_endpoint_url"].rsplit(":", 1)[1]))
    proxy.fail_puts = True
    env = sink_env(stack, topic, out.uri, STOCKPIPE_S3_ENDPOINT_URL=proxy.url)
    args = ("--batch-size", "100", "--batch-seconds", "1", "-v")
    first = start_sink(env, *args)
    try:
        time.sleep(8)
        second = start_sink(env, *args)
        time.sleep(10)
        # The second sink dies holding partitions the first one had paused: they come back to it.
        second.kill()
        second.wait()
        time.sleep(10)
        proxy.fail_puts = False
        sizes = partition_sizes(stack, topic)
        wait_caught_up(out, sizes, timeout=60)
    finally:
        log = stop(first)
        proxy.close()
    assert proxy.answered > 0, "S3 never answered 503: the fault did not fire"
    assert log.count("paused") >= 2, log[-3000:]
    assert out.check_exactly_once(sizes) == 6_000
    check_claims_chain(out, topic)


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_a_claim_larger_than_the_buffer_limit_is_honoured(stack: Stack, tmp_path: Path, kind: str) -> None:
    """A claim of 5,000 records found at start, with `max_buffered_records` 150: the partition must read
    to the claim's end rather than pause at the mark, which only a write (that cannot happen) lifts."""
    topic = make_topic(stack, partitions=1)
    out = Output(stack, kind, tmp_path)
    produce(stack, topic, 8_000, start_ts=MIDNIGHT + 1_000)
    put_claim(out, topic, 0, 4_999, 5_000)
    # Small fetches and a small prefetch queue, so the claim's end is not among the records fetched
    # before the partition would pause (those are still delivered to a paused partition).
    fetch = (
        "session.timeout.ms=6000,heartbeat.interval.ms=1000,"
        "max.partition.fetch.bytes=16384,queued.max.messages.kbytes=64"
    )
    proc = start_sink(
        sink_env(stack, topic, out.uri, STOCKPIPE_KAFKA_LIBRDKAFKA=fetch),
        *("--batch-size", "100", "--batch-seconds", "1", "--max-buffered-records", "150", "-v"),
    )
    wait_caught_up(out, {0: 8_000}, timeout=60)
    assert "claims honoured 1" in stop(proc)
    assert out.check_exactly_once({0: 8_000}) == 8_000
    assert ("raw.data/year=2023/month=01/day=01/" + f"{topic}+0+{0:020}-{4_999:020}.jsonl") in out.objects()
    check_claims_chain(out, topic)


def test_records_deleted_past_an_unfinished_claim_do_not_stall_the_partition(stack: Stack, tmp_path: Path) -> None:
    """A claim of offsets 0..=499 was made and never written; then `DeleteRecords` removed offsets below
    200. The sink writes what is left of the claim (200..=499) under its key and goes on."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = make_topic(stack, partitions=1)
    out = Output(stack, "file", tmp_path)
    produce(stack, topic, 1_000, start_ts=MIDNIGHT + 1_000)
    put_claim(out, topic, 0, 499, 500)
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for f in admin.delete_records([TopicPartition(topic, 0, 200)]).values():
        f.result(30)
    proc = start_sink(sink_env(stack, topic, out.uri), "--batch-size", "100", "--batch-seconds", "1")
    wait_caught_up(out, {0: 800}, timeout=60)
    log = stop(proc)
    assert out.check_exactly_once({0: 1_000}, bad={(0, o) for o in range(200)}) == 800
    assert f"{topic}+0+{0:020}-{499:020}.jsonl" in " ".join(out.objects())
    assert "300 of the claim's 500 records are still in Kafka" in log, log[-2000:]
    check_claims_chain(out, topic)


def offsets_anywhere(out: Output) -> list[int]:
    """Every kafka_offset in every data object under the output, whatever its prefix."""
    found = []
    for path in out.root.rglob("*.jsonl*"):
        if "_stockpipe" in path.parts or path.name.startswith(".tmp-"):
            continue
        body = path.read_bytes()
        text = gzip.decompress(body) if path.name.endswith(".gz") else body
        found += [json.loads(line)["kafka_offset"] for line in text.decode().splitlines()]
    return sorted(found)


@pytest.mark.parametrize("change", ["gzip", "prefix"])
def test_a_claim_is_rewritten_with_its_own_settings_not_todays(stack: Stack, tmp_path: Path, change: str) -> None:
    """A sink wrote a claim's objects gzipped (or under the default prefix) and crashed before committing;
    it restarts with other settings. Honouring the claim rewrites the same keys: no record lands in two
    objects (one `.jsonl.gz` and one `.jsonl`, or one under each prefix)."""
    topic = make_topic(stack, partitions=1)
    out = Output(stack, "file", tmp_path)
    produce(stack, topic, 1_000, start_ts=MIDNIGHT + 1_000)
    ext = "jsonl.gz" if change == "gzip" else "jsonl"
    key = f"raw.data/year=2023/month=01/day=01/{topic}+0+{0:020}-{299:020}.{ext}"
    lines = [
        json.dumps({"trade_ts": MIDNIGHT + 1_000 + o, "kafka_partition": 0, "kafka_offset": o}) for o in range(300)
    ]
    body = "\n".join(lines).encode() + b"\n"
    out.put(key, gzip.compress(body) if change == "gzip" else body)
    put_claim(out, topic, 0, 299, 300, [key])
    extra = {"STOCKPIPE_SINK_GZIP": "false"} if change == "gzip" else {"STOCKPIPE_SINK_RAW_PREFIX": "raw.v2"}
    proc = start_sink(sink_env(stack, topic, out.uri, **extra), "--batch-size", "100", "--batch-seconds", "1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(offsets_anywhere(out)) < 1_000:
        time.sleep(1)
    time.sleep(2)  # a rewrite under a second name would come now
    stop(proc)
    assert offsets_anywhere(out) == list(range(1_000))
    assert key in out.objects()
    if change == "prefix":
        # What follows the claim is written under today's prefix, from where the claim ended.
        later = sorted(audit.object_extent("x/" + p.name)[2:] for p in (out.root / "raw.v2").rglob("*.jsonl"))
        assert later[0][0] == 300 and later[-1][1] == 999, later
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(later)), later
    check_claims_chain(out, topic)


def test_a_409_on_a_claim_is_retried_never_taken_as_a_claim_that_exists(stack: Stack, tmp_path: Path) -> None:
    """S3 answers 409 ConditionalRequestConflict to a conditional write racing another; the write has
    not happened and must be retried. Taken as 'exists', a GET that finds nothing would let the sink
    write objects under no claim at all."""
    from stockpipe.dev.faults import FaultProxy

    topic = make_topic(stack, partitions=1)
    out = Output(stack, "s3", tmp_path)
    produce(stack, topic, 2_000, start_ts=MIDNIGHT + 1_000)
    proxy = FaultProxy(int(stack.state["s3_endpoint_url"].rsplit(":", 1)[1]))
    proxy.conflict_claims(5)
    env = sink_env(stack, topic, out.uri, STOCKPIPE_S3_ENDPOINT_URL=proxy.url)
    proc = start_sink(env, "--batch-size", "100", "--batch-seconds", "1")
    try:
        wait_caught_up(out, {0: 2_000}, timeout=90)
    finally:
        log = stop(proc)
        proxy.close()
    assert proxy.conflicts == 5, "the fault did not fire"
    assert "409" in log or "Conflict" in log, log[-2000:]
    assert out.check_exactly_once({0: 2_000}) == 2_000
    assert check_claims_chain(out, topic) >= 1


def test_a_transactional_topic_with_aborted_transactions_keeps_one_claim_chain(stack: Stack, tmp_path: Path) -> None:
    """Transaction markers and aborted records take offsets a consumer never sees: every batch still
    starts where the previous one ended, so a restarted sink and a live one cannot claim the same
    records under two start offsets. Transactions arrive while the sink runs (batches close on the timer
    at their ends), and it crashes twice at chosen steps; it writes every committed record once."""
    from confluent_kafka import Producer

    topic = make_topic(stack, partitions=1)
    out = Output(stack, "file", tmp_path)
    p = Producer({"bootstrap.servers": stack.bootstrap, "transactional.id": f"tx-{topic}"})
    p.init_transactions(30)
    committed = sent = 0

    def transactions(n: int) -> None:
        nonlocal committed, sent
        for _ in range(n):
            i = sent
            sent += 1
            p.begin_transaction()
            for j in range(20):
                ts = MIDNIGHT + 1_000 + i * 20 + j
                p.produce(topic, key=b"AAPL", value=json.dumps({"symbol": "AAPL", "trade_ts": ts}).encode())
            if i % 3 == 2:
                p.abort_transaction(30)
            else:
                p.commit_transaction(30)
                committed += 20
            time.sleep(0.4)

    args = ("--batch-size", "1000", "--batch-seconds", "0.3")
    # Crashes at chosen steps: after the third claim, then before the second commit.
    for failpoint in ("after_claim:3", "before_commit:2"):
        proc = start_sink(sink_env(stack, topic, out.uri, STOCKPIPE_FAILPOINT=failpoint), *args)
        for _ in range(60):
            transactions(1)
            if proc.poll() is not None:
                break
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGABRT, log_of(proc)[-2000:]
    proc = start_sink(sink_env(stack, topic, out.uri), *args)
    transactions(6)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(len(b.splitlines()) for b in out.objects().values()) < committed:
        time.sleep(1)
    stop(proc)
    seen = sorted(
        json.loads(line)["kafka_offset"] for body in out.objects().values() for line in body.decode().splitlines()
    )
    assert len(seen) == len(set(seen)) == committed
    assert check_claims_chain(out, topic) >= 4


def test_a_store_that_ignores_conditional_writes_is_refused_at_start(stack: Stack, tmp_path: Path) -> None:
    """Claims rest on If-None-Match; a store that ignores it would let two writers both claim."""
    from stockpipe.dev.faults import FaultProxy

    topic = make_topic(stack, partitions=1)
    out = Output(stack, "s3", tmp_path)
    proxy = FaultProxy(int(stack.state["s3_endpoint_url"].rsplit(":", 1)[1]))
    proxy.ignore_conditions = True
    proc = start_sink(sink_env(stack, topic, out.uri, STOCKPIPE_S3_ENDPOINT_URL=proxy.url))
    try:
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proxy.close()
    err = log_of(proc)
    assert proc.returncode != 0
    assert "does not honour conditional writes (If-None-Match: *)" in err, err[-2000:]
    assert "Traceback" not in err
