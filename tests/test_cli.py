"""The command-line contract: help everywhere, one-line errors, flags ↔ keys ↔ env."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest

import stockpipe
from stockpipe._status import WAITING_FOR_KAFKA
from stockpipe.cli import NOT_READ_BY, build_parser
from stockpipe.config import env_names, fields_of, flag_for

from .conftest import cli


def _commands(parser: argparse.ArgumentParser, words: list[str]) -> list[list[str]]:
    found = [words]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                found += _commands(sub, [*words, word])
    return found


COMMANDS = _commands(build_parser(), [])
assert len(COMMANDS) > 15 and ["glue", "run"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_works(command: list[str]) -> None:
    done = cli(*command, "--help")
    assert "usage:" in done.stdout


def test_stockpipe_entry_point_and_module_help() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "stockpipe")
    assert "usage: stockpipe" in subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for module, option in (("stockpipe.producer", "--symbols"), ("stockpipe.consumer", "--batch-size")):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
        assert "--bootstrap-servers" in done.stdout and option in done.stdout
        # The usage line is a command that runs: the module alone, not the module and a command name.
        assert done.stdout.startswith(f"usage: python -m {module} [-h]"), done.stdout[:80]
        version = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
        assert (version.returncode, version.stdout) == (0, f"stockpipe {stockpipe.__version__}\n")
        bad = subprocess.run([sys.executable, "-m", module, "--no-such-flag"], capture_output=True, text=True)
        assert (bad.returncode, bad.stderr.splitlines()[-1]) == (
            2,
            f"python -m {module}: error: unrecognized arguments: --no-such-flag",
        )


USES = {
    ("produce",): ["finnhub", "kafka", "producer"],
    ("sink",): ["kafka", "sink", "s3"],
    ("simulate",): ["simulate"],
    ("dev", "up"): ["dev", "s3"],
    ("etl",): ["transform", "s3"],
    ("topics",): ["kafka"],
    ("load",): ["warehouse", "s3"],
    ("query",): ["warehouse", "s3"],
    ("glue", "setup"): ["glue", "transform", "s3"],
    ("glue", "deploy"): ["glue", "transform", "s3"],
    ("glue", "run"): ["glue", "s3"],
}


@pytest.mark.parametrize("command", list(USES), ids=" ".join)
def test_every_setting_of_a_command_is_a_flag(command: tuple[str, ...]) -> None:
    parser = build_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    options = {o for a in parser._actions for o in a.option_strings}
    not_read = NOT_READ_BY.get(" ".join(command), set())
    for section in USES[command]:
        for f in fields_of(section):
            if (section, f.name) in not_read:
                assert flag_for(f) not in options, (command, section, f.name)
                continue
            assert flag_for(f) in options, (command, section, f.name)
            for name in env_names(section, f.name):
                assert name in parser.format_help().replace("\n", ""), (command, name)


def test_a_flag_shows_its_default() -> None:
    out = " ".join(cli("produce", "--help").stdout.split())
    assert "trade topic (default stock-data; env STOCKPIPE_KAFKA_TOPIC)" in out
    assert "idempotent producer (keep on) (default on; env STOCKPIPE_KAFKA_IDEMPOTENCE)" in out
    assert "(default AAPL,MSFT,AMZN,BINANCE:BTCUSDT; env STOCKPIPE_FINNHUB_SYMBOLS)" in out
    assert "Finnhub API key (env STOCKPIPE_FINNHUB_API_KEY or FINNHUB_API_KEY)" in out


def test_a_command_offers_no_flag_it_would_ignore() -> None:
    assert "--group-id" not in cli("produce", "--help").stdout
    assert "--quotes-topic" not in cli("sink", "--help").stdout
    assert "--group-id" in cli("sink", "--help").stdout
    assert "--quotes-topic" in cli("produce", "--help").stdout
    done = cli("produce", "--group-id", "g", check=False)
    assert done.returncode == 2 and "unrecognized arguments: --group-id g" in done.stderr


def test_producer_flags_named_by_the_contract() -> None:
    out = cli("produce", "--help").stdout
    for flag in (
        "--symbols",
        "--ws-url",
        "--rest-url",
        "--bootstrap-servers",
        "--topic",
        "--duration",
        "--max-messages",
        "--config",
    ):
        assert flag in out, flag


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["produce", "--bootstrap-servers", "nonsense"], "bootstrap_servers"),
        (["produce", "--no-such-flag"], "unrecognized arguments"),
        (["produce", "--ws-url", "wss://ws.finnhub.io"], "no Finnhub API key"),
        (["dev", "env"], "not running"),
        (["dev", "up", "--sasl"], "--sasl needs --tls"),
        (["dev", "chaos", "--scenario", "nope"], "unknown scenario(s) nope; see --list"),
        (["produce", "--symbols", ","], "[finnhub] symbols = [] (from flag --symbols): expected at least one symbol"),
        (["demo", "--seconds", "-1"], "--seconds -1: must be greater than zero"),
        (["demo", "--seconds", "0"], "--seconds 0: must be greater than zero"),
        (["demo", "--seconds", "nan"], "--seconds nan: must be greater than zero"),
        (
            ["etl", "--date", "2024-01-02", "--since", "2024-01-01"],
            "argument --since: not allowed with argument --date",
        ),
        (
            ["load", "--since", "2024-01-01", "--date", "2024-01-02"],
            "argument --date: not allowed with argument --since",
        ),
        (["simulate", "--port", "0", "--replay", "/nonexistent/f.jsonl"], "replay /nonexistent/f.jsonl: No such file"),
        (["simulate", "--port", "0", "--ledger", "/nonexistent/l.jsonl"], "ledger /nonexistent/l.jsonl: No such file"),
        (["simulate", "--host", "999.1.1.1"], "cannot listen on 999.1.1.1:8765:"),
        # The demo chooses its simulator's port and length and its own stack: not options.
        (["demo", "--duration", "30"], "unrecognized arguments: --duration 30"),
        (["demo", "--bootstrap-servers", "h:1"], "unrecognized arguments: --bootstrap-servers h:1"),
    ],
)
def test_user_mistakes_end_in_one_line(args: list[str], needle: str, tmp_path: object) -> None:
    env = dict(os.environ, STOCKPIPE_DEV_HOME=str(tmp_path))
    env.pop("FINNHUB_API_KEY", None)
    done = cli(*args, env=env, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("usage:")]
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]


def _closed_port() -> int:
    """A local port nothing listens on (connections to it are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "args",
    [["topics"], ["sink", "--output", "file://{tmp}/lake"], ["produce", "--ws-url", "ws://127.0.0.1:9"]],
    ids=["topics", "sink", "produce"],
)
def test_a_stop_is_not_held_up_by_brokers_that_do_not_answer(args: list[str], tmp_path: object) -> None:
    # Each command first waits up to 15-30 s for the brokers (topics to create); SIGTERM, like
    # Ctrl-C, ends that wait at once, and the user is told why nothing happened.
    port = _closed_port()
    env = dict(
        os.environ,
        STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        FINNHUB_API_KEY="test",
        STOCKPIPE_DEV_HOME=str(tmp_path),
    )
    env.pop("STOCKPIPE_CONFIG", None)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockpipe", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    time.sleep(3)
    assert proc.poll() is None, "still waiting for the brokers when stopped"
    proc.terminate()
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - stopped < 5, err
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert f"error: kafka: cannot reach 127.0.0.1:{port}: stopped before they answered (" in last, err
    assert "Connection refused" in last, err
    if args[0] != "topics":  # the status lines say what the run waited for, not rows of zero rates
        status = [line for line in err.strip().splitlines()[:-1] if "WARNING" not in line]  # the interrupt's
        assert len(status) >= 2 and set(status) == {WAITING_FOR_KAFKA}, err


def test_an_empty_input_is_named_not_only_counted(tmp_path: object) -> None:
    os.mkdir(f"{tmp_path}/empty-lake")
    lake = f"file://{tmp_path}/empty-lake"
    done = cli("etl", "--input", lake, "--output", lake, "--date", "2026-01-02")
    lines = done.stderr.strip().splitlines()
    assert (
        lines[0] == f"etl: no raw JSONL under {lake}/raw.data/ for 2026-01-02 (--input should be the sink's --output)"
    )
    assert lines[-1].startswith("etl (rust): days built 0")
    done = cli("load", "--input", lake, "--warehouse", f"duckdb://{tmp_path}/w.duckdb")
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"load: no Parquet files under {lake}/processed.data/: run stockpipe etl first"
    assert lines[-1].startswith("load (duckdb): files 0")


@pytest.mark.parametrize("command", ["etl", "load"])
def test_a_missing_input_directory_is_an_error_and_is_not_created(command: str, tmp_path: object) -> None:
    # A mistyped local lake is a user's mistake, like a missing bucket: one line, exit 2, and the
    # read-only command leaves no empty directory behind that would hide the typo next time.
    lake = f"file://{tmp_path}/no-lake"
    target = ["--output", f"file://{tmp_path}/out"] if command == "etl" else ["--warehouse", f"duckdb://{tmp_path}/w"]
    done = cli(command, "--input", lake, *target, check=False)
    assert done.returncode == 2, done.stderr
    setting = "[transform] input = " if command == "etl" else "--input "
    assert done.stderr.strip().splitlines() == [
        f"python -m stockpipe: error: {setting}'{lake}': no such directory {tmp_path}/no-lake"
    ]
    assert not os.path.exists(f"{tmp_path}/no-lake")


def test_a_failed_tool_is_reported_by_the_line_that_names_its_error() -> None:
    from stockpipe.dev.tools import _first_error

    maven = (
        "\x1b[0m\x1b[0m[INFO] Scanning for projects...\n"
        "[ERROR] Failed to execute goal on project kafka-runtime: Could not resolve dependencies: "
        "org.apache.kafka:kafka_2.13:jar:0.0.1 was not found\n[ERROR] \n[ERROR] Re-run Maven using the -X switch\n"
    )
    assert _first_error(maven).startswith("Failed to execute goal on project kafka-runtime: Could not resolve")
    go = "go: downloading github.com/minio/minio v0.0.0\ngo: github.com/minio/minio@v0: invalid version\n"
    assert _first_error(go) == "go: github.com/minio/minio@v0: invalid version"
    assert _first_error("") == "no output"
