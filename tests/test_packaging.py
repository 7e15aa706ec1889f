"""The wheel users install: built for release, self-contained, and running the pipeline from a fresh
virtualenv that sees nothing of this source tree."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, Stack, unique_topic
from .test_transform import processed_tables

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


def run(
    *cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def test_the_release_wheel_runs_the_pipeline_from_a_fresh_virtualenv(stack: Stack, tmp_path: Path) -> None:
    # The release build, as published: a manylinux wheel carrying the OpenSSL that librdkafka links.
    dist = tmp_path / "dist"
    maturin = Path(sys.executable).with_name("maturin")
    run(maturin, "build", "--release", "--out", dist, cwd=ROOT, timeout=1800)
    (wheel,) = dist.glob("*.whl")
    assert re.fullmatch(r"stockpipe-[\d.]+-cp3\d+-abi3-manylinux_\d+_\d+_x86_64\.whl", wheel.name), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    bundled = [n for n in names if n.startswith("stockpipe.libs/")]
    assert any("/libssl" in n for n in bundled) and any("/libcrypto" in n for n in bundled), bundled
    for data in ("stockpipe/_native.abi3.so", "stockpipe/_native.pyi", "stockpipe/py.typed"):
        assert data in names
    assert [n for n in names if n.startswith("stockpipe/sql/analytics/")], "the named queries ship in the wheel"

    # A fresh virtualenv, its dependencies from the package index; commands run outside the tree.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    env = {k: v for k, v in stack.env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    where = run(
        venv / "bin" / "python", "-c", "import stockpipe._native as n; print(n.__file__)", cwd=tmp_path, env=env
    )
    module = Path(where.stdout.strip())
    assert module.is_relative_to(venv), module
    linked = run("ldd", module).stdout
    ssl = [line for line in linked.splitlines() if "libssl" in line]
    assert ssl and all(str(venv) in line for line in ssl), linked  # the wheel's copy, not the system's

    # Simulator → producer → sink (S3 server, SSE-S3) → transform, every stage from the wheel.
    topic, bucket = unique_topic("wheel"), stack.state["bucket"]
    lake = f"s3://{bucket}/wheel-{time.time_ns()}"
    ledger = tmp_path / "ledger.jsonl"
    env.update(
        STOCKPIPE_KAFKA_TOPIC=topic,
        STOCKPIPE_KAFKA_DLQ_TOPIC=f"{topic}-dlq",
        STOCKPIPE_KAFKA_GROUP_ID=f"g-{topic}",
        STOCKPIPE_SINK_OUTPUT=lake,
        STOCKPIPE_SINK_STATUS_INTERVAL="0",
    )
    sim = subprocess.Popen(
        [venv / "bin" / "stockpipe", "simulate", "--port", "0", "--symbols", "AAPL,MSFT,BINANCE:BTCUSDT",
         "--rate", "500", "--max-trades", "1500", "--ledger", str(ledger)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        address = sim.stdout.readline().split()[-1]
        run(
            venv / "bin" / "python", "-m", "stockpipe.producer", "--ws-url", f"ws://{address}", "--api-key", "any",
            "--symbols", "AAPL,MSFT,BINANCE:BTCUSDT", "--status-interval", "0", "--duration", "8",
            cwd=tmp_path, env=env, timeout=60,
        )  # fmt: skip
    finally:
        sim.terminate()
        sim.communicate(timeout=30)
    trades = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    assert len(trades) == 1500
    run(venv / "bin" / "python", "-m", "stockpipe.consumer", "--batch-seconds", "1", "--duration", "15",
        cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    done = run(venv / "bin" / "stockpipe", "etl", "--input", lake, "--output", lake, "--json", cwd=tmp_path, env=env)
    assert json.loads(done.stdout)["rows"] == len(trades)

    tables = processed_tables(stack.s3(), lake)
    rows = [r for t in tables for r in t.select(["symbol", "volume"]).to_pylist()]
    assert collections.Counter((r["symbol"], r["volume"]) for r in rows) == collections.Counter(
        (t["symbol"], float(t["volume"]))
        for t in trades  # the ledger keeps the frame's text
    )
