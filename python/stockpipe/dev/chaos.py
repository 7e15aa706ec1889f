"""``stockpipe dev chaos``: the fault suite.

Each scenario runs the real pipeline — simulator → producer → 3 Kafka brokers → sink → S3 server —
injects one kind of fault, then checks every record against the simulator's ledger:

* **lost**: records the producer had acknowledged that never reached S3 (a gate: must be 0);
* **duplicated**: trades in S3 more often than the simulator sent them (a gate: must be 0);
* **reordered**: adjacent records of one symbol whose order in S3 differs from the ledger (a gate);
* **detect**: seconds from the fault until a pipeline process logged it (reconnect, rebalance, retry);
* **recover**: seconds from the end of the fault until records flow again from producer and sink.

Two control runs are made to fail the gates (idempotence off; RF 2 with min.insync.replicas 1 and
both replicas lost): a checker that cannot see loss and duplicates would pass them.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockpipe.config import Config
from stockpipe.dev import stack
from stockpipe.dev.audit import Result, check, claims_chain_problems, identity, read_ledger, table
from stockpipe.dev.faults import SCENARIOS, FaultProxy, Scenario
from stockpipe.dev.watch import Proc, first_notice, progress_after
from stockpipe.exceptions import ConfigError, DevStackError

Say = Callable[[str], None]
SYMBOLS = "AAPL,MSFT,AMZN,NVDA,TSLA,BINANCE:BTCUSDT,OANDA:EUR_USD,IC MARKETS:1"
#: A killed sink's partitions move on after 6 s instead of 45 s.
SINK_LIBRDKAFKA = "session.timeout.ms=6000,heartbeat.interval.ms=1000"


@dataclass
class Run:
    """The processes and timings of one scenario while it runs."""

    chaos: Chaos
    topic: str
    group: str
    prefix: str
    ledger: Path
    duration: float
    producer_args: list[str]
    producers: list[Proc] = field(default_factory=list)
    sinks: list[Proc] = field(default_factory=list)
    fault_start: float | None = None
    fault_end: float | None = None
    acked_floor: int = 0
    note: str = ""
    ws_url: str = ""
    s3_proxy: FaultProxy | None = None
    s3_endpoint: str | None = None
    faults_fired: int | None = None
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return max(1.0, self.duration - (time.monotonic() - self.started))

    def start_producer(self, extra: list[str] | None = None) -> Proc:
        proc = self.chaos.producer(self, extra or [])
        self.producers.append(proc)
        return proc

    def start_sink(self, **env: str) -> Proc:
        proc = self.chaos.sink(self, **env)
        self.sinks.append(proc)
        return proc

    def begin(self) -> None:
        self.fault_start = time.monotonic()

    def end(self) -> None:
        self.fault_end = time.monotonic()

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


class Chaos:
    """A 3-broker stack of its own and the means to break it."""

    def __init__(self, cfg: Config, workdir: Path, say: Say = print) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.say = say
        self.state: dict[str, Any] = {}
        self.env: dict[str, str] = {}

    def up(self) -> None:
        if self.cfg.dev.brokers != 3:
            raise DevStackError("the fault suite needs 3 brokers ([dev] brokers = 3)")
        self.state = stack.up(self.cfg, say=self.say)
        self.env = dict(os.environ, **stack.client_env(self.state))
        self.env.pop("STOCKPIPE_CONFIG", None)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def down(self) -> None:
        stack.down(self.cfg, say=lambda _m: None)

    # -- the services ------------------------------------------------------------------------

    def kafka_conf(self) -> dict[str, Any]:
        return stack.kafka_client_conf(self.state)

    @functools.cached_property
    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.kafka_conf())

    def admin(self) -> Any:
        """One admin client for the suite (it reconnects by itself when brokers come back)."""
        return self._admin

    @functools.cached_property
    def _s3(self) -> Any:
        return stack.s3_client(self.state)

    def replicas(self, topic: str, partition: int = 0) -> tuple[int, list[int], list[int]]:
        """``(leader, replicas, isr)`` of one partition (leader -1 when it has none)."""
        md = self.admin().list_topics(topic, timeout=10)
        p = md.topics[topic].partitions[partition]
        return int(p.leader), [int(r) for r in p.replicas], [int(r) for r in p.isrs]

    def wait_leader(self, topic: str, partition: int = 0, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                leader, _, _ = self.replicas(topic, partition)
                if leader >= 0:
                    return leader
            except Exception:  # noqa: BLE001 - the cluster may be between leaders
                pass
            time.sleep(0.2)
        raise DevStackError(f"{topic}[{partition}] has no leader after {timeout:.0f}s")

    def wait_isr(self, topic: str, size: int = 2, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                md = self.admin().list_topics(topic, timeout=10)
                if all(len(p.isrs) >= size for p in md.topics[topic].partitions.values()):
                    return
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.5)

    def kill9(self, name: str) -> None:
        stack.signal_service(self.cfg, name, signal.SIGKILL)

    def start(self, name: str) -> None:
        stack.start_service(self.cfg, name)

    def stop(self, name: str, grace: float = 5) -> None:
        stack.stop_service(self.cfg, name, grace)

    def sig(self, name: str, sig: int) -> None:
        stack.signal_service(self.cfg, name, sig)

    # -- the pipeline ------------------------------------------------------------------------

    def simulator(self, sc: Scenario, ledger: Path) -> tuple[Proc, str]:
        cmd = [
            sys.executable, "-m", "stockpipe", "simulate", "--port", "0", "--symbols", SYMBOLS,
            "--rate", str(sc.rate), "--duration", str(sc.duration), "--ledger", str(ledger),
            "--trades-per-frame", "10", "--ping-interval-s", "2", "--seed", str(random.randrange(1 << 30)),
            *sc.sim_args,
        ]  # fmt: skip
        sim = Proc("simulator", cmd, self.env)  # its output is drained, so it can never block on a pipe
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sim.popen.poll() is None:
            ready = [line for _, line in sim.snapshot() if line.startswith("listening on ")]
            if ready:
                return sim, f"ws://{ready[0].split()[-1]}"
            time.sleep(0.05)
        sim.signal(signal.SIGKILL)
        raise DevStackError(f"the simulator did not start:\n{sim.tail()}")

    def producer(self, run: Run, extra: list[str]) -> Proc:
        cmd = [
            sys.executable, "-m", "stockpipe.producer", "-v", "--ws-url", run.ws_url, "--api-key", "chaos",
            "--symbols", SYMBOLS, "--topic", run.topic, "--dlq-topic", run.topic + "-dlq",
            "--duration", f"{run.remaining() + 3:.1f}", "--status-interval", "0.5", "--backoff-initial-s", "0.2",
            "--backoff-max-s", "2", *run.producer_args, *extra,
        ]  # fmt: skip
        return Proc(f"producer-{len(run.producers) + 1}", cmd, self.env)

    def sink(self, run: Run, **extra: str) -> Proc:
        env = dict(
            self.env,
            STOCKPIPE_KAFKA_TOPIC=run.topic,
            STOCKPIPE_KAFKA_DLQ_TOPIC=run.topic + "-dlq",
            STOCKPIPE_KAFKA_GROUP_ID=run.group,
            STOCKPIPE_KAFKA_LIBRDKAFKA=SINK_LIBRDKAFKA,
            STOCKPIPE_SINK_OUTPUT=f"s3://{self.state['bucket']}/{run.prefix}",
            STOCKPIPE_SINK_STATUS_INTERVAL="0.5",
            STOCKPIPE_S3_ENDPOINT_URL=run.s3_endpoint or self.env["STOCKPIPE_S3_ENDPOINT_URL"],
            **extra,
        )
        return Proc(f"sink-{len(run.sinks) + 1}", [sys.executable, "-m", "stockpipe.consumer", "-v"], env)

    def create_topic(self, topic: str, config: dict[str, str]) -> None:
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        new = NewTopic(topic, num_partitions=3, replication_factor=2, config={"min.insync.replicas": "1", **config})
        for future in self.admin().create_topics([new], operation_timeout=30).values():
            future.result()
        self.wait_leader(topic)

    def caught_up(self, run: Run, timeout: float) -> bool:
        """True once every record of the topic is in S3 (by partition and offset)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(dict(self.kafka_conf(), **{"group.id": f"watch-{run.group}"}))
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not self._sinks_idle(run):
                    time.sleep(1)
                    continue
                try:
                    parts = [TopicPartition(run.topic, p) for p in range(3)]
                    total = sum(consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts)
                    if len({(p, o) for p, o, _ in self.s3_records(run.prefix)}) >= total:
                        return True
                except Exception:  # noqa: BLE001 - retried until the deadline
                    pass
                time.sleep(3)
            return False
        finally:
            consumer.close()

    @staticmethod
    def _sinks_idle(run: Run) -> bool:
        """The live sinks' last status lines show no lag and nothing buffered (reading S3 is dearer)."""
        live = [s for s in run.sinks if s.popen.poll() is None]
        for sink in live:
            lines = [line for _, line in sink.snapshot() if "records/s" in line]
            if not lines or not re.search(r"lag\s+0 .*oldest buffered\s+0\.0s", lines[-1]):
                return False
        return bool(live)

    # -- checking ------------------------------------------------------------------------------

    def kafka_records(self, topic: str) -> list[tuple[str, str, str, int]]:
        from confluent_kafka import Consumer

        consumer = Consumer(
            dict(self.kafka_conf(), **{"group.id": f"check-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
        )
        consumer.subscribe([topic])
        out: list[tuple[str, str, str, int]] = []
        idle = time.monotonic()
        while time.monotonic() - idle < 4:
            batch = consumer.consume(10_000, 0.5)
            for m in batch:
                if m.error() is None:
                    out.append(identity(json.loads(m.value() or b"{}", parse_float=str, parse_int=str)))
            if batch:
                idle = time.monotonic()
        consumer.close()
        return out

    def _objects(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        s3 = self._s3
        bucket = self.state["bucket"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                yield obj["Key"], gzip.decompress(body) if obj["Key"].endswith(".gz") else body

    def claims_problems(self, run: Run) -> list[str]:
        """What is wrong with the claims chain the run's sinks left (see docs/sink-exactly-once.md)."""
        claims = [json.loads(body) for _, body in self._objects(run.prefix + "/_stockpipe/claims/")]
        keys = [key for key, _ in self._objects(run.prefix + "/raw.data/")]
        return claims_chain_problems(claims, keys, run.topic)

    def s3_records(self, prefix: str) -> list[tuple[int, int, tuple[str, str, str, int]]]:
        """``(partition, offset, trade)`` of every line the sink wrote under ``prefix``."""
        out = []
        for _, body in self._objects(prefix + "/raw.data/"):
            for line in body.splitlines():
                rec = json.loads(line, parse_float=str, parse_int=str)
                out.append((int(rec["kafka_partition"]), int(rec["kafka_offset"]), identity(rec)))
        return out


def run_scenario(chaos: Chaos, sc: Scenario, say: Say) -> Result:
    topic = f"chaos-{sc.name}-{uuid.uuid4().hex[:6]}"
    ledger = chaos.workdir / f"{topic}.ledger.jsonl"
    chaos.create_topic(topic, sc.topic_config)
    run = Run(
        chaos=chaos,
        topic=topic,
        group=f"sink-{topic}",
        prefix=f"chaos/{topic}",
        ledger=ledger,
        duration=sc.duration,
        producer_args=list(sc.producer_args),
    )
    started = time.monotonic()
    sim, run.ws_url = chaos.simulator(sc, ledger)
    if sc.s3_proxy:
        run.s3_proxy = FaultProxy(int(chaos.state["s3_endpoint_url"].rsplit(":", 1)[1]))
        run.s3_endpoint = run.s3_proxy.url
    try:
        if not sc.sink_after:
            for _ in range(sc.sinks):
                run.start_sink()
        run.start_producer()
        sc.inject(run)
        for p in run.producers:
            p.wait(sc.duration + 180)
        sim.wait(60)
        if sc.sink_after:
            run.start_sink()
        if not chaos.caught_up(run, 240):
            run.note += "sink did not catch up within 240 s; "
        for s in run.sinks:
            s.stop()
    finally:
        for p in [*run.producers, *run.sinks]:
            p.signal(signal.SIGKILL)
        sim.signal(signal.SIGKILL)
        if run.s3_proxy is not None:
            run.s3_proxy.close()
    logs = chaos.workdir / topic
    logs.mkdir(parents=True, exist_ok=True)
    for p in [sim, *run.producers, *run.sinks]:
        (logs / f"{p.name}.log").write_text("\n".join(f"{at - started:8.2f} {line}" for at, line in p.snapshot()))
    acked = _acked(run)
    counts = check(read_ledger(ledger), acked, chaos.kafka_records(topic), chaos.s3_records(run.prefix))
    result = Result(
        scenario=sc.name,
        control=sc.control,
        acked=acked,
        note=run.note.strip("; "),
        faults_fired=run.faults_fired,
        chain_problems=chaos.claims_problems(run),
        **counts,
    )
    if result.chain_problems:
        result.note = "; ".join([result.note, *result.chain_problems[:3]]).strip("; ")
    if run.fault_start is not None:
        until = (run.fault_end or run.fault_start) + 10
        result.detect_s = first_notice([*run.producers, *run.sinks], run.fault_start, until)
    if run.fault_end is not None:
        # Flowing again = a producer acked and a sink wrote an object after the fault ended.
        marks = [
            progress_after(run.producers, "acked", run.fault_end),
            progress_after(run.sinks, "objects", run.fault_end),
        ]
        if all(m is not None for m in marks):
            result.recover_s = max(m for m in marks if m is not None) - run.fault_end
    result.seconds = time.monotonic() - started
    ledger.unlink(missing_ok=True)
    return result


def _acked(run: Run) -> int:
    """Acknowledged trades: each producer's final summary, or its last status line if it was killed."""
    total = 0
    for p in run.producers:
        summary = [line for _, line in p.snapshot() if line.startswith("producer: trades")]
        if summary:
            m = re.search(r"acked (\d+)", summary[-1])
            total += int(m.group(1)) if m else 0
        else:
            values = p.counter("acked")
            total += int(values[-1][1]) if values else 0
    return total + run.acked_floor


def run(
    cfg: Config,
    names: list[str] | None = None,
    *,
    workdir: Path | None = None,
    say: Say = print,
    keep_stack: bool = False,
) -> list[Result]:
    """Runs the named scenarios (all by default) on a 3-broker stack; returns their results."""
    chosen = [s for s in SCENARIOS if not names or s.name in names]
    unknown = set(names or []) - {s.name for s in SCENARIOS}
    if unknown:
        raise ConfigError(f"unknown scenario(s) {', '.join(sorted(unknown))}; see --list")
    chaos = Chaos(cfg, workdir or Path(cfg.dev.home) / "chaos-work", say)
    chaos.up()
    results = []
    try:
        for sc in chosen:
            say(f"── {sc.name}: {sc.what} ({sc.duration:.0f} s of trades)")
            result = run_scenario(chaos, sc, say)
            results.append(result)
            say(table([result]).splitlines()[-1] + (f"  {result.note}" if result.note else ""))
    finally:
        if not keep_stack:
            chaos.down()
    return results


def scenario_names() -> Iterator[tuple[str, str]]:
    for s in SCENARIOS:
        yield s.name, s.what
