"""Fixtures that start real services: Kafka (KRaft) and the S3 server, through `stockpipe dev up`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Shifts every port the tests use, so two test runs can share a machine (all stay below 32768).
PORT_OFFSET = int(os.environ.get("STOCKPIPE_TEST_PORT_OFFSET", "0"))


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m stockpipe ARGS` and returns the completed process."""
    done = subprocess.run(
        [sys.executable, "-m", "stockpipe", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else os.environ.copy(),
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"stockpipe {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def no_aws_credentials(tmp_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment) where the AWS SDKs' default credential chains find nothing."""
    keys = ("AWS_", "STOCKPIPE_S3_ACCESS_KEY_ID", "STOCKPIPE_S3_SECRET_ACCESS_KEY", "STOCKPIPE_S3_SESSION_TOKEN")
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith(keys)}
    none = str(tmp_path / "none")
    return dict(env, AWS_CONFIG_FILE=none, AWS_SHARED_CREDENTIALS_FILE=none, AWS_EC2_METADATA_DISABLED="true")


class Stack:
    """A running dev stack and the environment that points commands at it."""

    def __init__(self, home: Path, brokers: int, kafka_port: int, s3_port: int, **dev: str) -> None:
        kafka_port, s3_port = kafka_port + PORT_OFFSET, s3_port + PORT_OFFSET
        self.home = home
        self.brokers = brokers
        self.env = dict(
            os.environ,
            STOCKPIPE_DEV_HOME=str(home),
            STOCKPIPE_DEV_BROKERS=str(brokers),
            STOCKPIPE_DEV_KAFKA_PORT=str(kafka_port),
            STOCKPIPE_DEV_S3_PORT=str(s3_port),
            **{f"STOCKPIPE_DEV_{k.upper()}": v for k, v in dev.items()},
        )
        self.state: dict[str, Any] = {}

    def up(self) -> None:
        cli("dev", "up", env=self.env)
        self.state = json.loads((self.home / "stack.json").read_text())
        from stockpipe.dev.stack import client_env

        env = client_env(self.state)
        # Tests choose their own outputs; everything else points at the stack (incl. TLS/SASL).
        self.env.update({k: v for k, v in env.items() if not k.endswith(("_OUTPUT", "_INPUT"))})

    def down(self) -> None:
        cli("dev", "down", env=self.env)

    @property
    def bootstrap(self) -> str:
        return str(self.state["bootstrap_servers"])

    def kafka_conf(self) -> dict[str, Any]:
        """confluent-kafka settings that reach this stack (TLS and SASL included)."""
        from stockpipe.dev.stack import kafka_client_conf

        return kafka_client_conf(self.state)

    def pids(self) -> list[int]:
        return [int(p["pid"]) for p in self.state.get("processes", [])]

    def s3(self) -> Any:
        from stockpipe.dev.stack import s3_client

        return s3_client(self.state)


def pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One broker and the S3 server, for the whole session."""
    s = Stack(tmp_path_factory.mktemp("stack1"), 1, 29092, 29000)
    s.up()
    try:
        yield s
    finally:
        s.down()
        leftover = [p for p in s.pids() if pid_running(p)]
        assert not leftover, f"dev down left processes running: {leftover}"


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def consume_all(
    bootstrap: str | dict[str, Any],
    topic: str,
    expected: int | None = None,
    idle_s: float = 5.0,
    timeout_s: float = 120.0,
) -> list[Any]:
    """Reads every message of `topic` from the beginning until `expected` arrived or it goes idle.

    `bootstrap` is a server list or a whole confluent-kafka configuration (`Stack.kafka_conf()`).
    """
    from confluent_kafka import Consumer

    base = {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)
    consumer = Consumer(
        {
            **base,
            "group.id": f"check-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10000, 0.5)
            for m in batch:
                if m.error() is None:
                    messages.append(m)
            if batch:
                last = time.monotonic()
            if expected is not None and len(messages) >= expected and time.monotonic() - last > 1.0:
                break
            if expected is None and messages and time.monotonic() - last > idle_s:
                break
            if expected is not None and len(messages) < expected and time.monotonic() - last > max(idle_s, 15):
                break
    finally:
        consumer.close()
    return messages
