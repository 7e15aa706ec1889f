"""The benchmark harness runs (quick mode, the transform stage) and writes a table with every
contender beside stockpipe. Speed targets live in BENCHMARKS.md, never in assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.mark.slow
@pytest.mark.spark
def test_bench_quick_transform_stage_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/run.py"), "--quick", "--stages", "etl", "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    section = text.split("### Raw JSONL → Parquet", 1)[1].split("\n\n")[1]  # the stage's own table
    rows = [line for line in section.splitlines() if line.startswith("| ") and "contender" not in line]
    names = [r.split("|")[1].strip() for r in rows]
    assert names == [
        "stockpipe (Rust engine, shared rules)",
        "Glue job on local PySpark (shared rules)",
        "pyarrow json reader + parquet writer (no rules)",
        "DuckDB COPY (no rules)",
    ]
    for r in rows:
        rate, ratio = (c.strip().replace(",", "") for c in r.split("|")[2:4])
        assert float(rate) > 0 and float(ratio) > 0, r
    assert "Measured" in text and "Versions:" in text
