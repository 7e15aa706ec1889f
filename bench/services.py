"""The services every stage measures against: the bench stack (Kafka and MinIO from `stockpipe dev`),
the simulator, topics filled with the same records for every contender, the Rust reference binaries."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from harness import PY, ROOT, SYMBOLS


def stack_up(home: Path) -> dict[str, Any]:
    env = dict(
        os.environ,
        STOCKPIPE_DEV_HOME=str(home),
        STOCKPIPE_DEV_KAFKA_PORT="17092",
        STOCKPIPE_DEV_S3_PORT="17000",
        STOCKPIPE_DEV_BROKERS="1",
    )
    # Every run starts from empty storage: an S3 server holding the objects of earlier runs is slower
    # per PUT, which would make runs on the same machine disagree.
    subprocess.run([PY, "-m", "stockpipe", "dev", "down"], env=env, check=False, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)
    subprocess.run([PY, "-m", "stockpipe", "dev", "up"], env=env, check=True, capture_output=True)
    state = json.loads((home / "stack.json").read_text())
    state["env"] = env
    return state


def warm_broker(bootstrap: str) -> None:
    """One idempotent producer before any measurement: a fresh broker answers the first producer-id
    request with "coordinator load in progress" and librdkafka retries after 500 ms, which would land
    on whichever contender runs first."""
    from confluent_kafka import Producer

    topic = f"bench-warmup-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    p.produce(topic, value=b"warm-up")
    p.flush(30)


def stack_down(state: dict[str, Any]) -> None:
    subprocess.run([PY, "-m", "stockpipe", "dev", "down"], env=state["env"], check=False, capture_output=True)
    home = Path(state["env"]["STOCKPIPE_DEV_HOME"])
    for data in [home / "s3", *home.glob("kafka-*")]:  # the logs stay; the data is gigabytes
        if data.is_dir():
            shutil.rmtree(data, ignore_errors=True)


def aws_env(state: dict[str, Any]) -> dict[str, str]:
    return dict(
        os.environ,
        AWS_ACCESS_KEY_ID=state["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=state["aws_secret_access_key"],
        AWS_REGION=state["aws_region"],
        AWS_DEFAULT_REGION=state["aws_region"],
    )


def ensure_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from stockpipe import _native, load_config

    kafka = load_config(env={}, use_default_file=False).kafka
    kafka.bootstrap_servers, kafka.topic = bootstrap, topic
    _native.ensure_topics(json.dumps(kafka.__dict__), [(topic, partitions)], 30.0)


class Simulator:
    """``stockpipe simulate`` with a trade budget: the same seed, so every contender gets the same stream."""

    def __init__(self, port: int, *, rate: float, trades: int, per_frame: int = 20) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [PY, "-m", "stockpipe", "simulate", "--port", str(port), "--rate", str(rate), "--max-trades", str(trades),
             "--trades-per-frame", str(per_frame), "--symbols", SYMBOLS, "--seed", "7", "--ping-interval-s", "3600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def fill_topic(bootstrap: str, topic: str, n: int) -> None:
    """n trade records on ``topic`` (the input every sink contender reads)."""
    from confluent_kafka import Producer

    ensure_topic(bootstrap, topic)
    # Uncompressed: kafka-python, the seed's client, has no lz4 codec without extra packages.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "none"})
    rng = random.Random(7)
    syms = SYMBOLS.split(",")
    now = int(time.time() * 1000)
    for i in range(n):
        s = syms[i % len(syms)]
        v = (
            f'{{"symbol":"{s}","price":{rng.uniform(10, 500):.4f},"volume":{rng.randint(1, 500)},"trade_ts":{now + i},'
            f'"conditions":["1","12"],"received_ts":{now + i + 3},"source":"finnhub","schema_version":1}}'
        )
        while True:
            try:
                p.produce(topic, key=s, value=v)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def example_binary(name: str) -> Path:
    """Builds ``bench/NAME.rs`` (a cargo example over stockpipe's own clients)."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", name], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release/examples" / name


def pipeline_env(state: dict[str, Any], sim: Simulator, topic: str, lake: str) -> dict[str, str]:
    """The environment for ``python -m stockpipe.producer`` / ``.consumer`` / ``etl`` on the bench stack."""
    env = dict(
        aws_env(state),
        STOCKPIPE_FINNHUB_WS_URL=sim.url,
        STOCKPIPE_FINNHUB_API_KEY="bench",
        STOCKPIPE_FINNHUB_SYMBOLS=SYMBOLS,
        STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS=state["bootstrap_servers"],
        STOCKPIPE_KAFKA_TOPIC=topic,
        STOCKPIPE_KAFKA_GROUP_ID=f"bench-{uuid.uuid4().hex[:6]}",
        STOCKPIPE_S3_ENDPOINT_URL=state["s3_endpoint_url"],
        STOCKPIPE_SINK_OUTPUT=lake,
        STOCKPIPE_TRANSFORM_INPUT=lake,
        STOCKPIPE_TRANSFORM_OUTPUT=lake,
    )
    env.pop("STOCKPIPE_CONFIG", None)
    return env


def start_stage(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m stockpipe.<module>``, its output in ``log``."""
    out = log.open("w")
    return subprocess.Popen(
        [PY, "-m", f"stockpipe.{module}"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
    )
