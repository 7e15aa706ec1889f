"""`stockpipe demo`: the README's first command runs every built stage and the counts agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


def test_demo_counts_agree_at_every_stage(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("FINNHUB_API_KEY", None)
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
    assert sent == acked == count("read back from Kafka") == raw > 0
    assert parquet + quarantined + count("duplicates dropped") == raw
    assert count("rows in DuckDB stock_prices") == parquet
    lines = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "stockpipe-data").rglob("*.jsonl"))
    assert lines == raw
    import duckdb

    (db,) = (tmp_path / "stockpipe-data").rglob("stockpipe.duckdb")
    assert duckdb.connect(str(db), read_only=True).execute("select count(*) from stock_prices").fetchone() == (parquet,)
    (chart,) = (tmp_path / "stockpipe-data").rglob("prices.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "last minute bars of" in done.stdout and "| open" in done.stdout
    assert "[1/6]" in done.stderr and "[6/6]" in done.stderr
