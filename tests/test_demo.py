"""`stockpipe demo`: the README's first command runs every built stage and the counts agree."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


def test_demo_counts_agree_at_every_stage(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("FINNHUB_API_KEY", None)
    # A config.ini for another cluster (./config.ini is read by default): the demo keeps to its own stack.
    (tmp_path / "config.ini").write_text(
        "[kafka]\nbootstrap_servers = 192.0.2.1:9093\nsecurity_protocol = sasl_ssl\nsasl_mechanism = PLAIN\n"
        "group_id = production-sink\n[simulate]\nport = 1\nduration_s = 1\n[dev]\nkafka_port = 1\nbrokers = 3\n"
    )
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks/analytics.ipynb").write_text("{}")  # run from a checkout of the repository
    done = subprocess.run(
        [sys.executable, "-m", "stockpipe", "demo", "--seconds", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    sent = int(re.search(r"trades sent by the simulator\s*: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    acked = int(re.search(r"acknowledged by Kafka\s*: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]

    def count(label: str) -> int:
        return int(re.search(label + r"\s*: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]

    raw, parquet, quarantined = (
        count("raw JSONL objects"),
        count(r"rows in Parquet \(processed.data/\)"),
        count("quarantined by the cleaning rules"),
    )
    # 8 s at the demo's 200 trades/s: a budget the producer publishes whole, then stops without a reconnect.
    assert sent == acked == count("read back from Kafka") == raw == 1600
    reconnects = re.findall(r"reconnects +(\d+)", done.stderr)
    assert reconnects and set(reconnects) == {"0"}, done.stderr[-3000:]
    # The demo's broker is new: its first producer-id requests are refused ("load in progress"). The
    # producer's warm-up asks again rather than let the first trades wait for librdkafka's 500 ms retry.
    p99s = [float(v) for v in re.findall(r"p99 +([\d.]+) ms", done.stderr)]
    assert p99s and max(p99s) < 400, done.stderr[-3000:]
    assert parquet + quarantined + count("duplicates dropped") == raw
    assert count("rows in DuckDB stock_prices") == parquet
    lines = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "stockpipe-data").rglob("*.jsonl"))
    assert lines == raw
    import duckdb

    (db,) = (tmp_path / "stockpipe-data").rglob("stockpipe.duckdb")
    assert duckdb.connect(str(db), read_only=True).execute("select count(*) from stock_prices").fetchone() == (parquet,)
    (chart,) = (tmp_path / "stockpipe-data").rglob("prices.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "last minute bars of" in done.stdout and re.search(r"\| +open +\|", done.stdout)
    # The commands to explore further run from anywhere: the warehouse and the notebook by absolute path.
    assert f"--warehouse duckdb://{db}" in done.stdout
    assert (
        f"STOCKPIPE_WAREHOUSE_WAREHOUSE=duckdb://{db} jupyter lab {tmp_path / 'notebooks/analytics.ipynb'}"
        in done.stdout
    )
    assert "[1/6]" in done.stderr and "[6/6]" in done.stderr
    # A first run on a fresh stack has nothing to warn about (no routine retry shown as a warning).
    assert " WARNING " not in done.stderr and " ERROR " not in done.stderr, done.stderr[-3000:]


def test_an_interrupted_demo_reports_what_was_acknowledged_at_every_stage(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("FINNHUB_API_KEY", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "stockpipe", "demo", "--seconds", "60"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert demo.stderr is not None
    seen = []
    for line in demo.stderr:
        seen.append(line)
        if line.startswith("[2/6]"):
            break
    time.sleep(4)
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=180)
    err = "".join(seen) + err
    assert demo.returncode == 130, err[-3000:]
    assert "interrupted: the producer stopped before the simulator" in err
    assert "do not agree" not in err and "Traceback" not in err, err[-3000:]

    def count(label: str) -> int:
        return int(re.search(label + r"\s*: (\d+)", out).group(1))  # type: ignore[union-attr]

    acked = count("acknowledged by Kafka")
    assert 0 < acked <= count("trades sent by the simulator")
    assert acked == count("read back from Kafka") == count("raw JSONL objects")
    assert count("rows in DuckDB stock_prices") == count(r"rows in Parquet \(processed.data/\)") > 0
