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
    raw = int(re.search(r"raw JSONL objects\s*: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    assert sent == acked == raw > 0
    lines = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "stockpipe-data").rglob("*.jsonl"))
    assert lines == raw
    assert "[1/4]" in done.stderr and "[4/4]" in done.stderr
