"""A canary secret in every credential setting never shows up in any command's output or in Kafka."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import Stack, cli, consume_all, unique_topic
from .ingest_helpers import Simulator, producer_cmd

pytestmark = [pytest.mark.kafka, pytest.mark.s3]
CANARY = "CANARY-7f3e1d9a"


def canary_env(base: dict[str, str], n: int) -> dict[str, str]:
    """Every secret setting holds a distinct canary (API key, S3 secret, SASL and key passwords)."""
    return dict(
        base,
        FINNHUB_API_KEY=f"{CANARY}-{n}-finnhub",
        STOCKPIPE_KAFKA_SASL_PASSWORD=f"{CANARY}-{n}-sasl",
        STOCKPIPE_KAFKA_SSL_KEY_PASSWORD=f"{CANARY}-{n}-sslkey",
        STOCKPIPE_WAREHOUSE_WAREHOUSE=f"redshift://admin:{CANARY}-{n}-redshift@127.0.0.1:1/dev",
    )


def assert_clean(done: subprocess.CompletedProcess[str], what: str) -> None:
    out = done.stdout + done.stderr
    assert CANARY not in out, f"{what} printed a secret:\n{out[-3000:]}"
    assert "Traceback" not in done.stderr, f"{what}:\n{done.stderr[-3000:]}"


def test_no_command_prints_a_secret(stack: Stack, tmp_path: Path) -> None:
    """Each command, verbose (-vv), on its error path: the canaries stay out of logs and errors."""
    env = canary_env(stack.env, 1)
    env["AWS_SECRET_ACCESS_KEY"] = f"{CANARY}-1-aws"  # wrong on purpose: S3 refuses it
    env["AWS_SESSION_TOKEN"] = f"{CANARY}-1-session"
    raw = f"s3://{stack.state['bucket']}/canary"
    commands = [
        ["config", "show", "-vv"],
        ["config", "show", "--json"],
        ["topics", "-vv", "--security-protocol", "sasl_plaintext", "--sasl-mechanism", "SCRAM-SHA-512",
         "--sasl-username", "u"],
        ["produce", "-vv", "--ws-url", "ws://127.0.0.1:9/", "--duration", "3"],
        ["produce", "-vv", "--mode", "quotes", "--rest-url", "http://127.0.0.1:9/", "--duration", "3"],
        ["sink", "-vv", "--output", raw, "--duration", "5"],
        ["etl", "-vv", "--input", raw, "--output", raw],
        ["load", "-vv"],
        ["query", "-vv", "ohlcv_minute"],
        ["glue", "setup", "-vv", "--lake", raw],
        ["dev", "status", "-vv"],
    ]  # fmt: skip
    for command in commands:
        done = cli(*command, env=env, check=False, timeout=120)
        assert_clean(done, " ".join(command))


def test_the_api_key_stays_out_of_logs_status_metrics_and_dead_letters(stack: Stack, tmp_path: Path) -> None:
    key = f"{CANARY}-2-finnhub"
    topic = unique_topic("canary")
    sim = Simulator(
        "--symbols", "AAPL,MSFT", "--rate", "500", "--duration", "4", "--token", key, "--malformed-rate", "0.3"
    )
    env = canary_env(stack.env, 2)
    done = subprocess.run(
        [*producer_cmd("--ws-url", sim.url, "--symbols", "AAPL,MSFT", "--topic", topic, "--duration", "5", "-vv",
                       "--dlq-topic", topic + "-dlq"),
         "--status-interval", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    sim_err = sim.wait()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "acked" in done.stderr  # status lines and the summary were printed
    assert_clean(done, "producer")
    assert key not in sim_err
    letters = consume_all(stack.bootstrap, topic + "-dlq", idle_s=3)
    trades = consume_all(stack.bootstrap, topic, idle_s=3)
    assert letters and trades
    for m in [*letters, *trades]:
        assert CANARY.encode() not in m.value()

    # The Python API's stats (metrics) carry no secret either.
    from stockpipe import Producer, load_config

    sim = Simulator("--symbols", "AAPL", "--rate", "200", "--duration", "2", "--token", key)
    cfg = load_config(env=env, use_default_file=False)
    cfg.finnhub.ws_url, cfg.finnhub.symbols, cfg.kafka.topic = sim.url, ["AAPL"], topic
    seen: list[str] = []
    stats = Producer(cfg).run(duration=3, status=lambda s: seen.append(json.dumps(s)))
    sim.wait()
    assert seen and CANARY not in "".join(seen) + repr(stats) + json.dumps(stats.__dict__, default=str)


def test_a_config_file_with_a_secret_readable_by_others_warns(tmp_path: Path) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(f"[finnhub]\napi_key = {CANARY}-3\n")
    ini.chmod(0o644)
    done = cli("config", "show", env=dict(os.environ, STOCKPIPE_CONFIG=str(ini)))
    assert "readable by other users" in done.stderr and f"chmod 600 {ini}" in done.stderr
    assert_clean(done, "config show")
    ini.chmod(0o600)
    assert "readable" not in cli("config", "show", env=dict(os.environ, STOCKPIPE_CONFIG=str(ini))).stderr
