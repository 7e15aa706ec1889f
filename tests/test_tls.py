"""TLS and SASL/SCRAM for real: a 3-broker cluster with TLS listeners, refused and accepted clients."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockpipe.dev import tls

from .conftest import Stack, cli, consume_all, unique_topic
from .ingest_helpers import Simulator, by_symbol_from_kafka, by_symbol_from_ledger, producer_cmd, read_ledger

pytestmark = [pytest.mark.kafka, pytest.mark.s3]
SYMBOLS = "AAPL,MSFT,BINANCE:BTCUSDT,OANDA:EUR_USD"


@pytest.fixture(scope="module")
def tls3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("tls3"), 3, 26092, 26000, tls="true")
    s.up()
    try:
        yield s
    finally:
        s.down()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cert, _ = tls.make_ca(tmp_path_factory.mktemp("other-ca"), "someone else's CA")
    return cert


def test_the_stack_advertises_tls_and_the_ca(tls3: Stack) -> None:
    security = tls3.state["kafka_security"]
    assert security["security_protocol"] == "ssl"
    ca = Path(security["ssl_ca_location"])
    text = subprocess.run(
        ["openssl", "x509", "-in", str(ca.parent / "broker.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(ca.parent / "broker.pem")], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    props = (tls3.home / "kafka-1" / "server.properties").read_text()
    assert "listeners=SSL://127.0.0.1:" in props and "CONTROLLER:SSL" in props
    assert "PLAINTEXT" not in props
    assert oct((tls3.home / "tls" / "ca.key").stat().st_mode & 0o777) == "0o600"


def test_a_plaintext_client_is_refused(tls3: Stack) -> None:
    for command in (["topics"], ["sink", "--duration", "5"]):
        done = cli(*command, "--security-protocol", "plaintext", env=tls3.env, check=False, timeout=120)
        assert done.returncode != 0, done.stdout
        err = done.stderr.strip()
        assert "cannot reach" in err and "security_protocol" in err, err
        assert "Traceback" not in err


def test_a_client_with_a_wrong_ca_is_refused(tls3: Stack, other_ca: Path) -> None:
    for command in (["topics"], ["produce", "--api-key", "k", "--duration", "5"]):
        done = cli(*command, "--ssl-ca-location", str(other_ca), env=tls3.env, check=False, timeout=120)
        assert done.returncode != 0, done.stdout
        assert "certificate verify failed" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    # The confluent-kafka client, independent of stockpipe, is refused the same way.
    from confluent_kafka.admin import AdminClient

    conf = dict(tls3.kafka_conf(), **{"ssl.ca.location": str(other_ca)})
    with pytest.raises(Exception, match=r"[Tt]ransport|timed out"):
        AdminClient(conf).list_topics(timeout=5)


def test_the_pipeline_runs_over_tls(tls3: Stack, tmp_path: Path) -> None:
    """Simulator → producer (TLS) → 3 TLS brokers → sink (TLS) → S3, checked trade by trade."""
    topic = unique_topic("tls")
    ledger = tmp_path / "ledger.jsonl"
    done = cli("topics", "--topic", topic, env=tls3.env)
    assert f"{topic}: created, 3 partitions, replication factor 2" in done.stdout
    sim = Simulator("--symbols", SYMBOLS, "--rate", "3000", "--duration", "6", "--ledger", str(ledger))
    produced = subprocess.run(
        producer_cmd("--ws-url", sim.url, "--api-key", "k", "--symbols", SYMBOLS, "--topic", topic, "--duration", "8"),
        env=tls3.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    sim.wait()
    assert produced.returncode == 0, produced.stderr[-2000:]
    sent = read_ledger(ledger)
    assert len(sent) > 10_000
    messages = consume_all(tls3.kafka_conf(), topic, expected=len(sent))
    assert by_symbol_from_kafka(messages) == by_symbol_from_ledger(sent)

    prefix = f"tls-{topic}"
    env = dict(
        tls3.env,
        STOCKPIPE_KAFKA_TOPIC=topic,
        STOCKPIPE_KAFKA_GROUP_ID=f"g-{topic}",
        STOCKPIPE_SINK_OUTPUT=f"s3://{tls3.state['bucket']}/{prefix}",
        STOCKPIPE_SINK_BATCH_SIZE="5000",
        STOCKPIPE_SINK_BATCH_SECONDS="1",
        STOCKPIPE_SINK_STATUS_INTERVAL="0",
    )
    sink = subprocess.run(
        [sys.executable, "-m", "stockpipe.consumer", "--duration", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sink.returncode == 0, sink.stderr[-2000:]
    s3 = tls3.s3()
    lines = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=tls3.state["bucket"], Prefix=prefix + "/raw.data/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=tls3.state["bucket"], Key=obj["Key"])["Body"].read()
            lines += [json.loads(line, parse_float=str, parse_int=str) for line in body.splitlines()]
    landed = Counter((r["symbol"], r["price"], r["volume"], int(r["trade_ts"])) for r in lines)
    wanted = Counter((r["symbol"], r["price"], r["volume"], int(r["trade_ts"])) for r in sent)
    assert landed == wanted


@pytest.fixture(scope="module")
def sasl1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("sasl1"), 1, 27092, 27000, tls="true", sasl="true")
    s.up()
    try:
        yield s
    finally:
        s.down()


def test_sasl_scram_over_tls(sasl1: Stack) -> None:
    security = sasl1.state["kafka_security"]
    assert security["security_protocol"] == "sasl_ssl" and security["sasl_mechanism"] == "SCRAM-SHA-512"
    topic = unique_topic("sasl")
    done = cli("topics", "--topic", topic, env=sasl1.env)
    assert f"{topic}: created" in done.stdout
    password = security["sasl_password"]
    wrong = cli("topics", "--sasl-password", "not-the-password", env=sasl1.env, check=False, timeout=120)
    assert wrong.returncode != 0
    assert "Authentication failed" in wrong.stderr or "SASL" in wrong.stderr, wrong.stderr
    assert password not in wrong.stdout + wrong.stderr and "not-the-password" not in wrong.stderr
    no_sasl = cli("topics", "--security-protocol", "ssl", env=sasl1.env, check=False, timeout=120)
    assert no_sasl.returncode != 0
