"""`stockpipe dev`: three real brokers with replication, the S3 server with SSE-S3, clean shutdown."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PORT_OFFSET, Stack, cli, pid_running

pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack3"), 3, 21092, 21000)
    s.up()
    try:
        yield s
    finally:
        s.down()


def test_three_brokers_with_replicated_topic(cluster3: Stack) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})
    # Brokers learn new topics from the controller's log; one may lag a moment behind.
    deadline = time.monotonic() + 15
    md = admin.list_topics(timeout=15)
    while "stock-data" not in md.topics and time.monotonic() < deadline:
        time.sleep(0.5)
        md = admin.list_topics(timeout=15)
    assert len(md.brokers) == 3
    topic = md.topics["stock-data"]
    assert len(topic.partitions) == 3
    assert all(len(p.replicas) == 2 for p in topic.partitions.values())

    payload = uuid.uuid4().hex.encode()
    delivered: list[object] = []
    producer = Producer({"bootstrap.servers": cluster3.bootstrap, "acks": "all", "enable.idempotence": True})
    producer.produce("stock-data", key=b"AAPL", value=payload, on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(30) == 0
    assert delivered == [None]

    consumer = Consumer(
        {"bootstrap.servers": cluster3.bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe(["stock-data"])
    found = False
    for _ in range(60):
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None and msg.value() == payload:
            found = True
            break
    consumer.close()
    assert found


def test_up_is_idempotent_and_status_reports(cluster3: Stack) -> None:
    pids = cluster3.pids()
    done = cli("dev", "up", env=cluster3.env)
    assert f"127.0.0.1:{21092 + PORT_OFFSET}" in done.stdout
    import json

    state = json.loads((cluster3.home / "stack.json").read_text())
    assert [int(p["pid"]) for p in state["processes"]] == pids
    status = cli("dev", "status", env=cluster3.env).stdout
    assert status.count("running") == 4


def test_dev_env_exports_what_other_commands_need(cluster3: Stack) -> None:
    out = cli("dev", "env", env=cluster3.env).stdout
    for name in (
        "STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS",
        "STOCKPIPE_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ):
        assert f"export {name}=" in out


def test_s3_put_with_sse_is_reported_encrypted(cluster3: Stack) -> None:
    s3 = cluster3.s3()
    bucket = cluster3.state["bucket"]
    s3.put_object(Bucket=bucket, Key="probe/sse.txt", Body=b"x", ServerSideEncryption="AES256")
    assert s3.head_object(Bucket=bucket, Key="probe/sse.txt")["ServerSideEncryption"] == "AES256"


def test_s3_conditional_create_is_honoured(cluster3: Stack) -> None:
    from botocore.exceptions import ClientError

    s3 = cluster3.s3()
    bucket = cluster3.state["bucket"]
    key = f"probe/{uuid.uuid4().hex}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"


def test_port_in_use_is_a_clear_error(cluster3: Stack, tmp_path: Path) -> None:
    other = Stack(tmp_path / "other", 1, 21092, 21500)
    done = cli("dev", "up", env=other.env, check=False)
    assert done.returncode != 0
    assert f"port {21092 + PORT_OFFSET}" in done.stderr and "already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_down_stops_every_process(tmp_path: Path) -> None:
    s = Stack(tmp_path / "short", 1, 23092, 23000)
    s.up()
    pids = s.pids()
    assert len(pids) == 2 and all(pid_running(p) for p in pids)
    s.down()
    assert not any(pid_running(p) for p in pids)
    assert not (s.home / "stack.json").exists()
