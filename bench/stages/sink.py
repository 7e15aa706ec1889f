"""Kafka → S3 JSONL objects at the seed's policy and at large batches, with the reference rows
that bound the result: the S3 server alone, the sink alone (local files), librdkafka reading alone."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from harness import HERE, PY, Row, measure
from services import aws_env, example_binary, fill_topic

#: PUTs in flight of the S3 server reference rows, as many as the sink's run writes at a time.
FLOOR_IN_FLIGHT = 16


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
