"""Kafka → S3 lag at a steady rate: each sink contender at the seed's policy (100 records / 10 s),
records produced at a paced rate, each record's lag from its production to its object's storing."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from harness import HERE, PY, SYMBOLS, fmt, pct, stop_all
from services import aws_env, ensure_topic

CONTENDERS = [
    ("stockpipe (Rust sink)", "rust_sink.py"),
    ("confluent-kafka + boto3", "confluent_sink.py"),
    ("seed: kafka-python + boto3", "seed_sink.py"),
]
#: After the measured records, more follow at this rate (or the measured one, if lower) until they
#: are all written: the batches holding the last of them close by count, as in a live stream, not
#: by the 10 s timer.
FILL_RATE = 1_000.0


def _wait_for_group(bootstrap: str, group: str, timeout: float = 60) -> None:
    """Until the contender's consumer group is stable with every partition assigned."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([group])[group].result(timeout=5)
            assigned = sum(len(m.assignment.topic_partitions) for m in desc.members)
            if desc.state == ConsumerGroupState.STABLE and assigned == 3:
                return
        except Exception:  # noqa: BLE001 - the group does not exist until the contender joins
            pass
        time.sleep(0.2)
    raise RuntimeError(f"sink lag: group {group} did not form in {timeout:.0f} s")


class _Paced:
    """A confluent-kafka producer sending trade records at a steady rate, keyed by symbol; each
    record carries its sequence number and its production time (``trade_ts``, ms)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Producer

        # Uncompressed: kafka-python, the seed's client, has no lz4 codec without extra packages.
        self._p = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 2,
            "compression.type": "none",
        })  # fmt: skip
        self.topic = topic
        self.sent = 0
        self.last_offset: dict[int, int] = {}  # partition → offset of the last measured record
        self._measured = 0
        self._syms = SYMBOLS.split(",")

    def _delivered(self, err: Any, msg: Any) -> None:
        value = msg.value()
        seq = int(value[value.rindex(b":") + 1 : -1])  # the value ends with "seq":N}
        if err is None and seq < self._measured:
            self.last_offset[msg.partition()] = max(self.last_offset.get(msg.partition(), -1), msg.offset())

    def send(self, rate: float, seconds: float, *, measured: bool, until: Callable[[], bool] | None = None) -> None:
        """Sends at ``rate`` for ``seconds``, or until ``until()`` (asked twice a second) is true."""
        if measured:
            self._measured = self.sent + int(rate * seconds)
        t0, start, next_check = time.perf_counter(), self.sent, 0.5
        while (elapsed := time.perf_counter() - t0) < seconds:
            if until is not None and elapsed >= next_check:
                if until():
                    break
                next_check = elapsed + 0.5
            due = start + int(elapsed * rate)
            while self.sent < due:
                s = self._syms[self.sent % len(self._syms)]
                now = int(time.time() * 1000)
                v = (
                    f'{{"symbol":"{s}","price":100.0,"volume":1,"trade_ts":{now},"conditions":["1"],'
                    f'"received_ts":{now},"source":"finnhub","schema_version":1,"seq":{self.sent}}}'
                )
                self._p.produce(self.topic, key=s, value=v, on_delivery=self._delivered)
                self.sent += 1
            self._p.poll(0.002)
        self._p.flush(30)

    @property
    def measured(self) -> int:
        return self._measured


def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return {tp.partition: tp.offset for tp in parts}
    finally:
        c.close()


def _lags(state: dict[str, Any], bucket: str, prefix: str, measured: int) -> list[float]:
    """Each measured record's lag: its object's LastModified (the S3 server's clock when it stored
    the object) minus the record's production time."""
    from stockpipe.dev.stack import s3_client

    s3 = s3_client(state)
    lags: dict[int, float] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/raw.data/"):
        for obj in page.get("Contents", []):
            stored_ms = obj["LastModified"].timestamp() * 1000
            for line in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines():
                r = json.loads(line)
                if r["seq"] < measured:
                    lags.setdefault(r["seq"], stored_ms - r["trade_ts"])
    return list(lags.values())


def bench_sink_lag(state: dict[str, Any], rates: list[float], seconds: float, rounds: int) -> list[str]:
    """For each rate and contender (alternating, ``rounds`` times): a fresh topic, the contender
    started and its group formed, ``seconds`` of paced records measured, then filler records until
    the group has committed every measured one; lags from the stored objects."""
    bootstrap, endpoint = state["bootstrap_servers"], state["s3_endpoint_url"]
    bucket = "kafka.stock.market.project"
    env = aws_env(state)
    results: dict[tuple[float, str], list[tuple[list[float], int]]] = {}
    for rate in rates:
        for _ in range(rounds):
            for name, script in CONTENDERS:
                topic, group = f"bench-lag-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
                prefix = f"bench/lag-{uuid.uuid4().hex[:8]}"
                ensure_topic(bootstrap, topic)
                cmd = [PY, str(HERE / "contenders" / script), bootstrap, topic, group, endpoint, bucket, prefix,
                       str(10**12), "100", "10", "300"]  # fmt: skip
                # Its log goes to a file: a pipe nobody reads would stall a contender that logs a lot.
                log = tempfile.TemporaryFile()
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
                try:
                    _wait_for_group(bootstrap, group)
                    paced = _Paced(bootstrap, topic)
                    paced.send(rate, seconds, measured=True)

                    def caught_up(paced: _Paced = paced, topic: str = topic, group: str = group) -> bool:
                        done = _committed(bootstrap, topic, group)
                        return all(done.get(p, -1) > o for p, o in paced.last_offset.items())

                    # Filler until every measured record is committed (its object stored), then a
                    # second more: the seed commits what it polled, a little ahead of its writes.
                    paced.send(min(rate, FILL_RATE), seconds * 4 + 60, measured=False, until=caught_up)
                    paced.send(min(rate, FILL_RATE), 1.0, measured=False)
                    if proc.poll() is not None:
                        log.seek(0)
                        tail = log.read().decode(errors="replace")[-3000:]
                        raise RuntimeError(f"sink lag: {script} exited ({proc.returncode}):\n{tail}")
                finally:
                    stop_all([proc], 30)
                    log.close()
                lags = _lags(state, bucket, prefix, paced.measured)
                results.setdefault((rate, name), []).append((lags, paced.measured))
                print(
                    f"  lag at {rate:,.0f}/s, {name}: {len(lags)} of {paced.measured}, p50 {fmt(pct(lags, 0.5))} ms, "
                    f"p99 {fmt(pct(lags, 0.99))} ms",
                    file=sys.stderr,
                )
    lines = [
        "| records/s | contender | records stored of sent (per run) | p50 ms | p99 ms | max ms | "
        "this ÷ stockpipe, p50 / p99 | runs |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def med(values: list[float]) -> float:
        """The upper median: with two runs the worse percentile, never an average of two."""
        return sorted(values)[len(values) // 2]

    for (rate, name), runs in results.items():
        p50, p99 = med([pct(lags, 0.5) for lags, _ in runs]), med([pct(lags, 0.99) for lags, _ in runs])
        base = results[(rate, CONTENDERS[0][0])]
        b50, b99 = med([pct(lags, 0.5) for lags, _ in base]), med([pct(lags, 0.99) for lags, _ in base])
        worst = max((max(lags) if lags else float("nan")) for lags, _ in runs)
        stored = ", ".join(f"{len(lags):,} of {n:,}" for lags, n in runs)
        lines.append(
            f"| {rate:,.0f} | {name} | {stored} | {fmt(p50)} | {fmt(p99)} | {fmt(worst)} | "
            f"{fmt(p50 / b50, 2)} / {fmt(p99 / b99, 2)} | {len(runs)} |"
        )
    return lines
