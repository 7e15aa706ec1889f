"""Finnhub WebSocket → Kafka against the simulator and a real broker, checked trade by trade."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stockpipe import Producer, load_config
from stockpipe._status import WAITING_FOR_KAFKA
from stockpipe.exceptions import AuthenticationError, ConfigError

from .conftest import Stack, consume_all, unique_topic
from .ingest_helpers import SYMBOLS20, Simulator, by_symbol_from_kafka, by_symbol_from_ledger, producer_cmd, read_ledger

pytestmark = [pytest.mark.kafka]
CANARY = "CANARY-TOKEN-4b1d2c"


@pytest.mark.slow
def test_every_ledger_trade_arrives_exactly_once_in_order(stack: Stack, tmp_path: Path) -> None:
    """20 symbols, 20k trades/s, 60 s, three kinds of forced disconnect, duplicates and out-of-order times."""
    ledger = tmp_path / "ledger.jsonl"
    topic = unique_topic("ingest")
    sim = Simulator(
        "--symbols", ",".join(SYMBOLS20), "--rate", "20000", "--duration", "60", "--ledger", str(ledger),
        "--token", CANARY, "--trades-per-frame", "40", "--disconnect-every-s", "14",
        "--disconnect-kinds", "clean,noclose,reset", "--duplicate-rate", "0.02", "--out-of-order-rate", "0.05",
        "--ping-interval-s", "5",
    )  # fmt: skip
    env = dict(stack.env, FINNHUB_API_KEY=CANARY)
    done = subprocess.run(
        producer_cmd(
            "--ws-url",
            sim.url,
            "--symbols",
            ",".join(SYMBOLS20),
            "--topic",
            topic,
            "--duration",
            "64",
            "--backoff-initial-s",
            "0.2",
            "-v",
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    sim_err = sim.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert CANARY not in done.stdout + done.stderr + sim_err

    sent = read_ledger(ledger)
    assert len(sent) > 60 * 20000 * 0.8, len(sent)
    messages = consume_all(stack.bootstrap, topic, expected=len(sent))
    assert len(messages) == len(sent)
    assert by_symbol_from_kafka(messages) == by_symbol_from_ledger(sent)

    summary = done.stderr.strip().splitlines()[-1]
    reconnects = int(re.search(r"reconnects (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert reconnects >= 3, summary
    assert int(re.search(r"acked (\d+)", summary).group(1)) == len(sent)  # type: ignore[union-attr]
    assert int(re.search(r"duplicates dropped (\d+)", summary).group(1)) > 0  # type: ignore[union-attr]


def test_silent_connection_is_detected_by_the_watchdog(stack: Stack, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    topic = unique_topic("silent")
    sim = Simulator(
        "--symbols", "AAPL,MSFT", "--rate", "2000", "--duration", "8", "--ledger", str(ledger),
        "--disconnect-every-s", "2", "--disconnect-kinds", "silent", "--ping-interval-s", "0.3",
    )  # fmt: skip
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = sim.url, "k", ["AAPL", "MSFT"]
    cfg.finnhub.silence_timeout_s, cfg.finnhub.backoff_initial_s = 1.0, 0.1
    cfg.kafka.topic = topic
    stats = Producer(cfg).run(duration=10)
    sim.wait()
    sent = read_ledger(ledger)
    assert stats.reconnects >= 2
    messages = consume_all(stack.bootstrap, topic, expected=len(sent))
    assert by_symbol_from_kafka(messages) == by_symbol_from_ledger(sent)


def test_malformed_frames_go_to_the_dead_letter_topic(stack: Stack, tmp_path: Path) -> None:
    topic = unique_topic("dlq")
    sim = Simulator("--symbols", "AAPL", "--rate", "500", "--duration", "3", "--malformed-rate", "0.5")
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = sim.url, "k", ["AAPL"]
    cfg.kafka.topic, cfg.kafka.dlq_topic = topic, topic + "-dlq"
    stats = Producer(cfg).run(duration=4)
    sim.wait()
    assert stats.rejected > 0 and stats.dead_letters == stats.rejected
    letters = consume_all(stack.bootstrap, topic + "-dlq", expected=stats.dead_letters)
    assert len(letters) == stats.dead_letters
    reasons = {json.loads(m.value())["reason"] for m in letters}
    assert reasons <= {
        "not_json",
        "not_object",
        "missing_symbol",
        "missing_price",
        "bad_price",
        "unknown_type",
        "trade_without_data",
    }
    assert all(json.loads(m.value())["raw"] for m in letters)


def test_51_symbols_on_a_50_symbol_plan_fails_before_connecting(stack: Stack) -> None:
    symbols = ",".join(f"S{i}" for i in range(51))
    started = time.monotonic()
    done = subprocess.run(
        producer_cmd("--ws-url", "ws://127.0.0.1:9", "--api-key", "k", "--symbols", symbols),
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "51 symbols configured but the plan allows 50" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 20
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.finnhub.symbols = symbols.split(",")
    with pytest.raises(ConfigError):
        Producer(cfg).run(duration=1)


def test_a_bounded_run_that_never_reaches_the_feed_fails(stack: Stack) -> None:
    # Nothing listens on port 9: every attempt is refused, and a scheduled run must not exit 0.
    done = subprocess.run(
        producer_cmd("--ws-url", "ws://127.0.0.1:9", "--api-key", "k", "--symbols", "AAPL", "--duration", "3"),
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert re.search(
        r"error: no connection to ws://127\.0\.0\.1:9 opened in [2-9] attempts; each attempt's reason", last
    ), done.stderr[-2000:]
    assert done.stderr.count("Connection refused") >= 2 and "Traceback" not in done.stderr
    # REST quotes: every request refused.
    done = subprocess.run(
        producer_cmd("--mode", "quotes", "--rest-url", "http://127.0.0.1:9", "--api-key", "k", "--symbols", "AAPL",
                     "--duration", "3"),
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert re.search(r"error: no quote request to http://127\.0\.0\.1:9 succeeded in [2-9] attempts;", last), (
        done.stderr[-2000:]
    )
    # REST quotes answered 503: backed off (1 s, 2 s, …), not retried at the budget's pace (10 a second).
    import http.server

    asked: list[str] = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            producer_cmd("--mode", "quotes", "--rest-url", f"http://127.0.0.1:{server.server_port}", "--api-key", "k",
                         "--symbols", "AAPL,MSFT", "--quotes-per-minute", "600", "--duration", "4"),
            env=stack.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 1, done.stderr[-2000:]
    assert 2 <= len(asked) <= 4, asked
    assert "HTTP 503; retrying in" in done.stderr and "no quote request to" in done.stderr.splitlines()[-1]
    # The same feed reached once: the run succeeds even though the server then goes away.
    sim = Simulator("--symbols", "AAPL", "--rate", "100", "--duration", "1")
    done = subprocess.run(
        producer_cmd("--ws-url", sim.url, "--api-key", "k", "--symbols", "AAPL", "--duration", "3"),
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no connection to" not in done.stderr and "trades 0," not in done.stderr


def test_bad_token_is_a_clear_error_without_retry_loop(stack: Stack) -> None:
    sim = Simulator("--symbols", "AAPL", "--token", "the-right-one", "--duration", "30")
    started = time.monotonic()
    done = subprocess.run(
        producer_cmd("--ws-url", sim.url, "--api-key", CANARY, "--symbols", "AAPL", "-vv"),
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    sim.stop()
    assert done.returncode == 1
    assert "refused the API key (HTTP 401" in done.stderr
    assert elapsed < 20
    assert CANARY not in done.stdout + done.stderr


def test_bad_token_raises_authentication_error(stack: Stack) -> None:
    sim = Simulator("--symbols", "AAPL", "--token", "right", "--duration", "20")
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = sim.url, CANARY, ["AAPL"]
    with pytest.raises(AuthenticationError) as info:
        Producer(cfg).run(duration=10)
    assert CANARY not in str(info.value)
    sim.stop()


def test_429_at_the_upgrade_backs_off_then_streams(stack: Stack, tmp_path: Path) -> None:
    ledger = tmp_path / "l.jsonl"
    sim = Simulator(
        "--symbols", "AAPL", "--rate", "1000", "--duration", "5", "--reject-upgrades", "1", "--ledger", str(ledger)
    )
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = sim.url, "k", ["AAPL"]
    cfg.finnhub.rate_limited_backoff_s, cfg.finnhub.backoff_initial_s = 1.5, 0.05
    cfg.kafka.topic = unique_topic("r429")
    started = time.monotonic()
    from stockpipe import _native

    raw = _native.run_producer(cfg.section_json("finnhub"), json.dumps(cfg.kafka.__dict__), duration_s=6)
    sim.wait()
    assert raw["rate_limited"] == 1
    assert raw["acked"] == len(read_ledger(ledger)) > 0
    assert time.monotonic() - started >= 1.5 * 0.5  # the floor after 429 (with jitter) was honoured


@pytest.mark.slow
def test_sigterm_at_100k_per_second_exits_fast_and_keeps_acked(stack: Stack) -> None:
    topic = unique_topic("term")
    sim = Simulator(
        "--symbols", "AAPL,MSFT,NVDA,AMD", "--rate", "100000", "--trades-per-frame", "100", "--duration", "60"
    )
    proc = subprocess.Popen(
        producer_cmd("--ws-url", sim.url, "--api-key", "k", "--symbols", "AAPL,MSFT,NVDA,AMD", "--topic", topic),
        env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    sent_at = time.monotonic()
    _, err = proc.communicate(timeout=30)
    exited_in = time.monotonic() - sent_at
    sim.stop()
    assert exited_in < 5.0, err
    summary = err.strip().splitlines()[-1]
    acked = int(re.search(r"acked (\d+)", summary).group(1))  # type: ignore[union-attr]
    trades = int(re.search(r"trades (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert acked > 100_000, summary
    messages = consume_all(stack.bootstrap, topic, expected=acked)
    assert acked <= len(messages) <= trades


@pytest.mark.slow
def test_sigterm_while_kafka_takes_nothing_gives_up_after_the_grace(stack: Stack) -> None:
    """Stopped with the broker frozen and the local queue full: the producer stops waiting for room
    after its grace (not after librdkafka's 5-minute delivery timeout), exits 1 and says how many
    trades it did not queue."""
    topic = unique_topic("frozen")
    sim = Simulator("--symbols", "AAPL,MSFT", "--rate", "100000", "--trades-per-frame", "100", "--duration", "120")
    proc = subprocess.Popen(
        producer_cmd("--ws-url", sim.url, "--api-key", "k", "--symbols", "AAPL,MSFT", "--topic", topic),
        env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    brokers = [int(p["pid"]) for p in stack.state["processes"] if str(p["name"]).startswith("kafka")]
    try:
        time.sleep(5)
        for pid in brokers:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(4)  # 100k trades/s fill the 100k-record queue
        proc.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        _, err = proc.communicate(timeout=60)
        exited_in = time.monotonic() - sent_at
    finally:
        for pid in brokers:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        sim.stop()
    assert exited_in < 15.0, err  # the grace (4 s) and the final flush (4 s)
    assert proc.returncode == 1, err
    summary = err.strip().splitlines()[-1]
    unqueued = re.search(r"not queued at stop (\d+)", summary)
    assert unqueued and int(unqueued.group(1)) > 0, summary
    assert "Kafka took no record" in err


def test_status_shows_the_p99_of_the_last_interval_not_of_the_whole_run(stack: Stack) -> None:
    """The broker frozen for 3 s in the middle of a run: the run's p99 stays in seconds long after,
    while the p99 the status line shows is that of the acknowledgements since its previous line
    (none while the broker is frozen), back to milliseconds once Kafka answers again."""
    sim = Simulator("--symbols", "AAPL,MSFT", "--rate", "400", "--duration", "30")
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = sim.url, "k", ["AAPL", "MSFT"]
    cfg.kafka.topic, cfg.producer.status_interval = unique_topic("interval"), 0.5
    brokers = [int(p["pid"]) for p in stack.state["processes"] if str(p["name"]).startswith("kafka")]
    reports: list[tuple[float, dict[str, float]]] = []
    started = time.monotonic()

    def freeze(sig: signal.Signals) -> None:
        for pid in brokers:
            os.kill(pid, sig)

    stop_at, cont_at = threading.Timer(3, freeze, (signal.SIGSTOP,)), threading.Timer(6, freeze, (signal.SIGCONT,))
    stop_at.start(), cont_at.start()
    try:
        stats = Producer(cfg).run(duration=11, status=lambda s: reports.append((time.monotonic() - started, dict(s))))
    finally:
        stop_at.cancel(), cont_at.cancel()
        freeze(signal.SIGCONT)
        sim.stop()
    assert stats.acked == stats.trades > 0
    frozen = [r for t, r in reports if 4.0 <= t <= 5.5]
    assert frozen and all("latency_p99_interval_ms" not in r for r in frozen), frozen
    from stockpipe.producer import format_status

    assert format_status(frozen[-1], frozen[0], 1.0).endswith("p99      - ms")
    late = [r for t, r in reports if t >= 8.5]
    assert late, reports
    for r in late:
        assert r["latency_p99_ms"] >= 1000, r  # a third of the run waited through the freeze
        assert r["latency_p99_interval_ms"] < 500, r
        assert f"p99 {r['latency_p99_interval_ms']:6.1f} ms" in format_status(r, r, 1.0)


def test_a_new_producers_first_trades_do_not_wait_for_its_producer_id(stack: Stack) -> None:
    """librdkafka asks for the idempotent producer's id on a metadata reply or a 500 ms timer. When the
    warm-up's first reply came before the learned broker was connected, a run's first half second of
    trades (a third to half of the runs of `python -m stockpipe.producer` here) waited for that timer.
    Nine runs in a row, a second of trades each: none waited."""
    sim = Simulator("--symbols", "AAPL,MSFT", "--rate", "400", "--duration", "120")
    topic = unique_topic("first-trades")
    p99s = []
    try:
        for _ in range(9):
            done = subprocess.run(
                producer_cmd("--ws-url", sim.url, "--api-key", "k", "--symbols", "AAPL,MSFT", "--topic", topic,
                             "--max-messages", "400", "--duration", "20"),
                env=stack.env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
            summary = done.stderr.strip().splitlines()[-1]
            acked = re.search(r"acked (\d+)", summary)
            assert acked and int(acked.group(1)) >= 400, summary
            p99s.append(float(re.search(r"p99 frame→ack ([\d.]+) ms", summary).group(1)))  # type: ignore[union-attr]
    finally:
        sim.stop()
    assert all(p < 300 for p in p99s), p99s


def test_quote_poller_respects_the_limit_and_skips_unknown_symbols(stack: Stack) -> None:
    sim = Simulator("--symbols", "AAPL,MSFT", "--rate", "100", "--duration", "15", "--rest-per-minute", "600")
    host = sim.address
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.producer.mode = "quotes"
    cfg.finnhub.rest_url, cfg.finnhub.api_key = f"http://{host}/api/v1", CANARY
    cfg.finnhub.symbols = ["AAPL", "MSFT", "NOPE"]
    cfg.finnhub.quotes_per_minute = 300  # 5 calls a second
    cfg.kafka.quotes_topic = unique_topic("quotes")
    started = time.monotonic()
    stats = Producer(cfg).run(duration=4)
    elapsed = time.monotonic() - started
    sim.stop()
    messages = consume_all(stack.bootstrap, cfg.kafka.quotes_topic, expected=stats.acked)
    assert len(messages) == stats.acked > 0
    records = [json.loads(m.value()) for m in messages]
    assert {r["symbol"] for r in records} <= {"AAPL", "MSFT"}
    assert all(r["price"] > 0 and r["quote_ts"] > 0 and r["source"] == "finnhub_quote" for r in records)
    # 5 calls a second for ~4 s (plus the first token): the bucket keeps the plan's rate.
    assert stats.acked <= 5 * elapsed + 2
    assert stats.unknown_symbols == 1 and stats.quote_requests >= stats.acked + stats.unchanged + 1
    assert stats.summary().startswith(f"quotes {stats.trades}, acked {stats.acked},")
    assert "unknown symbols 1" in stats.summary()


def test_quote_poller_backs_off_on_429(stack: Stack) -> None:
    sim = Simulator("--symbols", "AAPL", "--duration", "15", "--rest-per-second", "2", "--rest-per-minute", "1000")
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.producer.mode = "quotes"
    cfg.finnhub.rest_url, cfg.finnhub.api_key, cfg.finnhub.symbols = f"http://{sim.address}/api/v1", "k", ["AAPL"]
    cfg.finnhub.quotes_per_minute = 1800  # 30 a second: the server allows 2
    cfg.kafka.quotes_topic = unique_topic("q429")
    from stockpipe import _native

    raw = _native.run_quotes(cfg.section_json("finnhub"), json.dumps(cfg.kafka.__dict__), duration_s=5)
    sim.stop()
    assert raw["rate_limited"] >= 1
    assert raw["quote_requests"] < 30, raw  # backed off instead of hammering at 30/s


def test_simulator_replays_a_file_of_frames(stack: Stack, tmp_path: Path) -> None:
    frames = tmp_path / "frames.jsonl"
    frames.write_text(
        '{"type":"trade","data":[{"s":"AAPL","p":129.575,"t":1672348887785,"v":1,"c":["1","24","12"]},'
        '{"s":"BINANCE:BTCUSDT","p":0.00001234,"t":1672348887786,"v":0.5}]}\n'
        '{"type":"ping"}\n'
        '{"type":"trade","data":[{"s":"AAPL","p":129.58,"t":1672348887790,"v":3,"c":null}]}\n'
    )
    ledger = tmp_path / "ledger.jsonl"
    sim = Simulator("--replay", str(frames), "--rate", "100", "--duration", "3", "--ledger", str(ledger))
    cfg = load_config(env=stack.env, use_default_file=False)
    cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = sim.url, "k", ["AAPL", "BINANCE:BTCUSDT"]
    cfg.kafka.topic = unique_topic("replay")
    stats = Producer(cfg).run(duration=4)
    sim.wait()
    assert stats.acked == 3 and stats.pings >= 1
    messages = consume_all(stack.bootstrap, cfg.kafka.topic, expected=3)
    assert by_symbol_from_kafka(messages) == by_symbol_from_ledger(read_ledger(ledger))
    prices = sorted(json.loads(m.value(), parse_float=str)["price"] for m in messages)
    assert prices == ["0.00001234", "129.575", "129.58"]


class _HugeFrameServer:
    """A WebSocket server that answers the upgrade, then announces a 4 GiB text frame and sends
    only its first bytes, keeping the connection open: a client that read frames whole would hang."""

    def __init__(self) -> None:
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import base64
        import hashlib
        import struct

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            conn.sendall(b"\x81\x7f" + struct.pack(">Q", 4 << 30) + b'{"type":"trade","data":[')
            self.held.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


def test_an_oversized_frame_is_refused_from_its_header(stack: Stack) -> None:
    server = _HugeFrameServer()
    topic = unique_topic("huge")
    try:
        done = subprocess.run(
            producer_cmd("--ws-url", server.url, "--api-key", "k", "--symbols", "AAPL", "--topic", topic,
                         "--max-frame-bytes", "65536", "--backoff-initial-s", "0.1", "--backoff-max-s", "0.5",
                         "--silence-timeout-s", "30", "--duration", "6"),
            env=stack.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-2000:]
    # Refused as soon as the header announced 4 GiB (the silence watchdog, 30 s, never fired):
    # the client reconnected again and again within the 6 seconds.
    assert "oversized frame refused" in done.stderr, done.stderr[-2000:]
    assert server.connections >= 3, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


SLOW_LOGGING = """
import logging, sys, threading, time
from stockpipe.cli import main

class Slow(logging.Handler):
    def emit(self, record):
        if threading.current_thread() is not threading.main_thread():
            print("slow:", record.getMessage()[:80], file=sys.stderr, flush=True)
            time.sleep(2)  # a librdkafka thread in Python logging when the producer is dropped

logging.getLogger().addHandler(Slow())
sys.exit(main(sys.argv[1:]))
"""


def test_a_failed_start_ends_even_while_librdkafka_threads_are_logging(stack: Stack) -> None:
    """librdkafka's threads log through Python: dropping the producer must not wait for them holding the GIL."""
    # One bootstrap address answers (topics exist, the producer is made), the other refuses, and the
    # producer connects to both at once (not sparsely): its thread for the second logs each failed
    # connection while the feed refuses the key and the stage ends. Dropped holding the GIL, the
    # producer would wait for that thread forever.
    sim = Simulator("--symbols", "AAPL", "--token", "the-right-one", "--duration", "60")
    bootstrap = f"{stack.bootstrap},127.0.0.1:1"
    try:
        done = subprocess.run(
            [sys.executable, "-c", SLOW_LOGGING, "produce", "--api-key", "wrong", "--bootstrap-servers", bootstrap,
             "--librdkafka", "enable.sparse.connections=false", "--ws-url", sim.url, "--symbols", "AAPL",
             "--duration", "20"],
            env=stack.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        sim.stop()
    assert done.returncode == 1, done.stderr[-2000:]
    assert "slow: librdkafka: FAIL" in done.stderr  # the thread did log while the stage failed
    assert "refused the API key (HTTP 401" in done.stderr.strip().splitlines()[-1]


def test_unreachable_brokers_are_one_line_not_a_log_of_retries() -> None:
    # The producer is made once the brokers answered: before, it logged every failed connection.
    done = subprocess.run(
        [sys.executable, "-m", "stockpipe", "produce", "--api-key", "k", "--bootstrap-servers", "127.0.0.1:1",
         "--ws-url", "ws://127.0.0.1:9/", "--duration", "3", "--status-interval", "0.5"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    *status, last = done.stderr.strip().splitlines()
    assert "error: kafka: cannot reach 127.0.0.1:1: stopped before they answered" in last, done.stderr
    # The status lines say what the run waits for, not a row of zero rates.
    assert len(status) >= 3 and set(status) == {WAITING_FOR_KAFKA}, status
