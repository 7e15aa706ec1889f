"""Configuration: precedence, validation messages, redaction."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from stockpipe.config import Config, load_config
from stockpipe.exceptions import ConfigError
from stockpipe.settings import SimulatorSettings

from .conftest import cli

CANARY = "CANARY-KEY-7f3e9b"


def write_ini(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_defaults_then_file_then_env_then_flags(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "config.ini", "[kafka]\ntopic = from-file\nlinger_ms = 7\n[sink]\nbatch_size = 50\n")
    cfg = load_config(ini, env={})
    assert (cfg.kafka.topic, cfg.kafka.linger_ms, cfg.sink.batch_size) == ("from-file", 7, 50)
    assert cfg.kafka.compression == "lz4"
    assert cfg.sources[("kafka", "topic")] == str(ini)
    cfg = load_config(ini, env={"STOCKPIPE_KAFKA_TOPIC": "from-env"})
    assert cfg.kafka.topic == "from-env" and cfg.kafka.linger_ms == 7
    assert cfg.sources[("kafka", "topic")] == "env STOCKPIPE_KAFKA_TOPIC"
    cfg = load_config(ini, env={"STOCKPIPE_KAFKA_TOPIC": "from-env"}, flags={("kafka", "topic"): "from-flag"})
    assert cfg.kafka.topic == "from-flag"
    assert cfg.sources[("kafka", "topic")] == "flag --topic"


def test_seed_layout_loads_and_finnhub_env_alias(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "config.ini", f"[finnhub]\napi_key = {CANARY}\n")
    assert load_config(ini, env={}).finnhub.api_key == CANARY
    assert load_config(ini, env={"FINNHUB_API_KEY": "other"}).finnhub.api_key == "other"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"STOCKPIPE_SINK_BATCH_SIZE": "-5"},
            "[sink] batch_size = -5 (from env STOCKPIPE_SINK_BATCH_SIZE): must be greater than zero",
        ),
        (
            {"STOCKPIPE_SINK_BATCH_SIZE": "200000"},
            "[sink] max_buffered_records = 100000 (from default): must be at least batch_size (200000)",
        ),
        ({"STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "[kafka] bootstrap_servers"),
        ({"STOCKPIPE_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"}, "ssl_ca_location"),
        ({"STOCKPIPE_KAFKA_NOPE": "1"}, "unknown key [kafka] nope (from env STOCKPIPE_KAFKA_NOPE)"),
        (
            {"STOCKPIPE_SIMULATE_RATE": "-5"},
            "[simulate] rate = -5.0 (from env STOCKPIPE_SIMULATE_RATE): must be greater",
        ),
        ({"STOCKPIPE_SIMULATE_PING_INTERVAL_S": "0"}, "[simulate] ping_interval_s = 0.0"),
        (
            {"STOCKPIPE_SIMULATE_MAX_TRADES": "-1"},
            "[simulate] max_trades = -1 (from env STOCKPIPE_SIMULATE_MAX_TRADES)",
        ),
        (
            {"STOCKPIPE_SIMULATE_DUPLICATE_RATE": "1.5"},
            "duplicate_rate = 1.5 (from env STOCKPIPE_SIMULATE_DUPLICATE_RATE)",
        ),
        ({"STOCKPIPE_SIMULATE_DISCONNECT_KINDS": "clean,sudden"}, "[simulate] disconnect_kinds"),
        ({"STOCKPIPE_SIMULATE_PORT": "70000"}, "[simulate] port = 70000"),
        ({"STOCKPIPE_SIMULATE_REJECT_STATUS": "200"}, "expected an HTTP error status"),
        (
            {"STOCKPIPE_SINK_BATCH_SECONDS": "nan"},
            "[sink] batch_seconds = 'nan' (from env STOCKPIPE_SINK_BATCH_SECONDS)",
        ),
        (
            {"STOCKPIPE_SINK_BATCH_SECONDS": "1e400"},
            "[sink] batch_seconds = '1e400' (from env STOCKPIPE_SINK_BATCH_SECONDS): expected a finite number",
        ),
        (
            {"STOCKPIPE_SINK_BATCH_SECONDS": "soon"},
            "batch_seconds = 'soon' (from env STOCKPIPE_SINK_BATCH_SECONDS): expected a number",
        ),
        (
            {"STOCKPIPE_KAFKA_LINGER_MS": "2.5"},
            "[kafka] linger_ms = '2.5' (from env STOCKPIPE_KAFKA_LINGER_MS): expected a whole number",
        ),
        (
            {"STOCKPIPE_KAFKA_LINGER_MS": "-1"},
            "[kafka] linger_ms = -1 (from env STOCKPIPE_KAFKA_LINGER_MS): must not be negative",
        ),
        ({"STOCKPIPE_FINNHUB_DEDUPE_WINDOW_MS": "-1"}, "[finnhub] dedupe_window_ms = -1"),
        ({"STOCKPIPE_SIMULATE_SEED": "-1"}, "[simulate] seed = -1"),
        ({"STOCKPIPE_PRODUCER_STATUS_INTERVAL": "-1"}, "[producer] status_interval = -1.0"),
        (
            {"STOCKPIPE_FINNHUB_BACKOFF_INITIAL_S": "-1"},
            "backoff_initial_s = -1.0 (from env STOCKPIPE_FINNHUB_BACKOFF_INITIAL_S): must be greater than zero",
        ),
        ({"STOCKPIPE_FINNHUB_SILENCE_TIMEOUT_S": "0"}, "[finnhub] silence_timeout_s = 0.0"),
        (
            {"STOCKPIPE_FINNHUB_BACKOFF_MAX_S": "0.5"},
            "backoff_max_s = 0.5 (from env STOCKPIPE_FINNHUB_BACKOFF_MAX_S): must be at least backoff_initial_s",
        ),
        ({"STOCKPIPE_DEV_S3_PORT": "0"}, "[dev] s3_port = 0"),
        (
            {"STOCKPIPE_FINNHUB_SYMBOLS": " , "},
            "[finnhub] symbols = [] (from env STOCKPIPE_FINNHUB_SYMBOLS): expected at least one symbol",
        ),
        ({"STOCKPIPE_SIMULATE_SYMBOLS": ""}, "[simulate] symbols = [] (from env STOCKPIPE_SIMULATE_SYMBOLS)"),
        (
            {"STOCKPIPE_KAFKA_TOPIC": "stock data"},
            "[kafka] topic = 'stock data' (from env STOCKPIPE_KAFKA_TOPIC): expected",
        ),
        ({"STOCKPIPE_KAFKA_DLQ_TOPIC": ".."}, "[kafka] dlq_topic = '..'"),
        ({"STOCKPIPE_KAFKA_QUOTES_TOPIC": "q" * 250}, "[kafka] quotes_topic"),
        ({"STOCKPIPE_WAREHOUSE_SCHEMA": "analytics; drop"}, "[warehouse] schema = 'analytics; drop'"),
        ({"STOCKPIPE_WAREHOUSE_SCHEMA": "2024"}, "expected a schema name"),
        ({"STOCKPIPE_WAREHOUSE_WAREHOUSE": "redshift://wg/dev"}, "workgroup 'wg': a Redshift Serverless workgroup"),
    ],
)
def test_bad_values_name_key_and_source(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env, use_default_file=False)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("key", "uri"),
    [
        ("STOCKPIPE_SINK_OUTPUT", "s3://"),
        ("STOCKPIPE_SINK_OUTPUT", "s3:///raw"),
        ("STOCKPIPE_SINK_OUTPUT", "file://"),
        ("STOCKPIPE_TRANSFORM_INPUT", "/data/lake"),
        ("STOCKPIPE_TRANSFORM_OUTPUT", "s3:/bucket"),
        ("STOCKPIPE_WAREHOUSE_INPUT", "s3://"),
        ("STOCKPIPE_GLUE_LAKE", "s3:///lake"),
    ],
)
def test_a_lake_uri_without_a_bucket_or_path_is_refused_at_load(key: str, uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={key: uri}, use_default_file=False)
    assert f"= {uri!r} (from env {key}): expected s3://bucket" in str(info.value)


def test_lake_uris_that_name_a_bucket_or_a_path_are_accepted() -> None:
    cfg = load_config(
        env={
            "STOCKPIPE_SINK_OUTPUT": "s3://bucket",
            "STOCKPIPE_TRANSFORM_INPUT": "s3://bucket/raw/",
            "STOCKPIPE_TRANSFORM_OUTPUT": "file:///tmp/lake",
            "STOCKPIPE_WAREHOUSE_INPUT": "file://./relative",
        },
        use_default_file=False,
    )
    assert (cfg.sink.output, cfg.warehouse.input) == ("s3://bucket", "file://./relative")


def test_temporary_aws_credentials_keep_their_session_token() -> None:
    from stockpipe.aws import s3_client

    env = {"AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "tok-123"}
    cfg = load_config(env=env, use_default_file=False)
    assert (cfg.s3.access_key_id, cfg.s3.session_token) == ("ASIAEXAMPLE", "tok-123")
    assert cfg.sources[("s3", "session_token")] == "env AWS_SESSION_TOKEN"
    assert "tok-123" in cfg.secrets() and "tok-123" not in repr(cfg)
    credentials = s3_client(cfg)._request_signer._credentials
    assert (credentials.access_key, credentials.token) == ("ASIAEXAMPLE", "tok-123")


def test_every_disconnect_kind_is_accepted_and_named_in_the_help() -> None:
    from stockpipe._native import DISCONNECT_KINDS

    (setting,) = [f for f in dataclasses.fields(SimulatorSettings) if f.name == "disconnect_kinds"]
    for kind in DISCONNECT_KINDS:
        cfg = load_config(env={"STOCKPIPE_SIMULATE_DISCONNECT_KINDS": kind}, use_default_file=False)
        assert cfg.simulate.disconnect_kinds == [kind]
        assert kind in setting.metadata["help"]


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.ini", "[sink]\nbatchsize = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key \[sink\] batchsize \(from .*c.ini\)"):
        load_config(ini, env={})


def test_librdkafka_passthrough_parses_pairs() -> None:
    cfg = load_config(
        env={"STOCKPIPE_KAFKA_LIBRDKAFKA": "socket.timeout.ms=1000, fetch.wait.max.ms=10"}, use_default_file=False
    )
    assert cfg.kafka.librdkafka == {"socket.timeout.ms": "1000", "fetch.wait.max.ms": "10"}


def test_secret_file_readable_by_others_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(f"[finnhub]\napi_key = {CANARY}\n")
    ini.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_config(ini, env={})
    assert "readable by other users" in caplog.text
    assert CANARY not in caplog.text


def test_config_show_redacts_the_canary_everywhere(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "config.ini", f"[finnhub]\napi_key = {CANARY}\n[kafka]\nsasl_password = {CANARY}2\n")
    env = dict(os.environ, STOCKPIPE_CONFIG=str(ini), AWS_SECRET_ACCESS_KEY=CANARY + "3")
    for args in (["config", "show"], ["config", "show", "--json"], ["config", "show", "-vv"]):
        done = cli(*args, env=env)
        assert CANARY not in done.stdout + done.stderr
        assert "***" in done.stdout
    assert "api_key = ***" in cli("config", "show", env=env).stdout


def test_a_password_inside_a_warehouse_uri_is_redacted() -> None:
    uri = f"redshift://admin:{CANARY}@example.redshift.amazonaws.com:5439/dev"
    env = dict(os.environ, STOCKPIPE_WAREHOUSE_WAREHOUSE=uri)
    for args in (["config", "show"], ["config", "show", "--json"]):
        done = cli(*args, env=env)
        assert CANARY not in done.stdout + done.stderr
        assert "redshift://admin:***@example.redshift.amazonaws.com:5439/dev" in done.stdout
    cfg = load_config(env={"STOCKPIPE_WAREHOUSE_WAREHOUSE": uri}, use_default_file=False)
    assert CANARY not in repr(cfg) and CANARY in cfg.secrets()
    bad = cli("load", "--warehouse", f"redshift://admin:{CANARY}@h:5439/", check=False)
    assert bad.returncode == 2 and CANARY not in bad.stderr


def test_errors_are_scrubbed_of_secrets_but_not_mangled_by_a_tiny_one() -> None:
    cfg = load_config(env={"FINNHUB_API_KEY": CANARY, "STOCKPIPE_KAFKA_SASL_PASSWORD": "k"}, use_default_file=False)
    scrubbed = cfg.scrub(f"kafka: cannot connect with key {CANARY}")
    assert scrubbed == "kafka: cannot connect with key ***"


def test_repr_of_config_is_redacted() -> None:
    cfg = load_config(env={"FINNHUB_API_KEY": CANARY}, use_default_file=False)
    assert CANARY not in repr(cfg)
    assert CANARY in cfg.secrets()


def test_every_number_set_from_python_is_checked_again_when_a_stage_runs() -> None:
    from stockpipe import Producer, Sink

    cfg = load_config(env={"FINNHUB_API_KEY": "k"}, use_default_file=False)
    cfg.finnhub.silence_timeout_s = float("nan")
    with pytest.raises(ConfigError, match=r"\[finnhub\] silence_timeout_s = nan \(from Python\): expected a finite"):
        Producer(cfg).run()
    cfg = load_config(env={}, use_default_file=False)
    cfg.sink.batch_size = -1
    with pytest.raises(ConfigError, match=r"\[sink\] batch_size = -1 \(from Python\): must be greater than zero"):
        Sink(cfg).run()
    # A value no one changed after loading keeps its source; a Config built by hand has no other.
    cfg = load_config(env={"STOCKPIPE_SINK_BATCH_SIZE": "5"}, use_default_file=False)
    assert (cfg.source_of("sink", "batch_size"), cfg.source_of("sink", "gzip")) == (
        "env STOCKPIPE_SINK_BATCH_SIZE",
        "default",
    )
    cfg.finnhub.symbols.append("NVDA")
    assert cfg.source_of("finnhub", "symbols") == "Python"
    cfg = Config()
    cfg.sink.batch_size = 0
    with pytest.raises(ConfigError, match=r"\[sink\] batch_size = 0 \(from Python\)"):
        Sink(cfg).run()


@pytest.mark.parametrize("duration", [float("inf"), float("nan"), -1.0])
def test_a_run_length_that_is_no_duration_is_refused_before_anything_starts(duration: float) -> None:
    from stockpipe import Producer, Sink

    cfg = load_config(env={"FINNHUB_API_KEY": "k"}, use_default_file=False)
    for stage in (Producer(cfg), Sink(cfg)):
        with pytest.raises(ConfigError, match=r"duration_s = .*: expected a finite, non-negative number of seconds"):
            stage.run(duration=duration)


def test_config_show_is_a_config_file_that_loads_to_the_same_settings_without_its_secrets(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKPIPE_", "AWS_", "FINNHUB_"))}
    env = dict(
        clean,
        FINNHUB_API_KEY=CANARY,
        STOCKPIPE_SINK_BATCH_SIZE="7",
        STOCKPIPE_FINNHUB_SYMBOLS="AAPL,BINANCE:BTCUSDT",
        STOCKPIPE_KAFKA_LIBRDKAFKA="fetch.wait.max.ms=50,client.rack=r1",
        STOCKPIPE_SINK_GZIP="true",
    )
    shown = cli("config", "show", env=env).stdout
    assert cli("config", env=env).stdout == shown  # show is the default action
    assert "; from env STOCKPIPE_SINK_BATCH_SIZE\nbatch_size = 7\n" in shown
    assert "; from env FINNHUB_API_KEY (a secret: not shown)\n; api_key = ***\n" in shown
    ini = write_ini(tmp_path / "config.ini", shown)
    again = load_config(ini, env={}, use_default_file=False)
    expected = load_config(env={k: v for k, v in env.items() if k != "FINNHUB_API_KEY"}, use_default_file=False)
    assert again.redacted() == expected.redacted() and again.finnhub.api_key is None
    assert again.sink.batch_size == 7 and again.sink.gzip is True
    assert again.kafka.librdkafka == {"fetch.wait.max.ms": "50", "client.rack": "r1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("oops\n[kafka]\n", "line 1: 'oops' comes before any [section]"),
        ("[kafka]\ntopic = a\njunk line\n", "line 3: expected KEY = VALUE, got 'junk line'"),
        ("[kafka]\ntopic = a\ntopic = b\n", "line 3: [kafka] topic is set twice"),
        ("[kafka]\n[kafka]\n", "line 2: [kafka] appears twice"),
    ],
)
def test_a_config_file_that_does_not_parse_is_named_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    ini = write_ini(tmp_path / "config.ini", text)
    with pytest.raises(ConfigError) as info:
        load_config(ini, env={}, use_default_file=False)
    assert str(info.value) == f"config file {ini}, {message}"


def test_the_stages_default_to_the_loaded_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stockpipe

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.ini").write_text("[kafka]\ntopic = from-the-file\n")
    monkeypatch.setenv("STOCKPIPE_SINK_BATCH_SIZE", "7")
    for stage in (stockpipe.Producer(), stockpipe.Sink()):
        assert (stage.config.kafka.topic, stage.config.sink.batch_size) == ("from-the-file", 7)
