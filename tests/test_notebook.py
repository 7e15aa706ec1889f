"""The analytics notebook runs headless on data the pipeline produced and draws its charts: on days of
trades, and on a single minute of them (what a short demo leaves), where some charts have nothing to show."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from stockpipe import load_config, warehouse

from .conftest import ROOT
from .transform_helpers import write_raw


def _load(tmp_path: Path, lake: Path) -> tuple[str, int]:
    import stockpipe

    cfg = load_config(env={}, use_default_file=False)
    uri = f"file://{lake}"
    cfg.transform = dataclasses.replace(cfg.transform, input=uri, output=uri)
    stockpipe.transform(config=cfg)
    db = f"duckdb://{tmp_path / 'nb.duckdb'}"
    return db, warehouse.load(uri, db, config=cfg).total_rows


def _execute(tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("STOCKPIPE_WAREHOUSE_WAREHOUSE", db)
    monkeypatch.setenv("STOCKPIPE_CHARTS", str(tmp_path / "charts"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(ROOT / "notebooks/analytics.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs)
    assert f"warehouse: {db}" in printed, "the notebook must follow the configured warehouse"
    return outputs, printed


def _drawn(tmp_path: Path, outputs: list[Any], names: tuple[str, ...]) -> None:
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == len(names)
    assert sorted(p.stem for p in (tmp_path / "charts").iterdir()) == sorted(names)
    for name in names:
        png = tmp_path / "charts" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000, name


@pytest.mark.slow
def test_the_analytics_notebook_executes_and_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_raw(tmp_path / "lake", clean_per_day=3000, objects_per_day=2)
    db, rows = _load(tmp_path, tmp_path / "lake")
    assert rows > 6000
    assert len(warehouse.query("gaps", db, config=load_config(env={}, use_default_file=False))) > 0

    outputs, _ = _execute(tmp_path, db, monkeypatch)
    _drawn(
        tmp_path,
        outputs,
        ("price_trades", "candles_vwap", "movers", "moving_averages", "volatility", "gaps", "feed_latency"),
    )
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert re.search(rf"^0\s+{rows}\s", shown, re.M), "the summary table counts every loaded trade"


@pytest.mark.slow
def test_the_notebook_on_a_single_minute_of_trades_says_what_it_cannot_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "lake/raw.data/year=2024/month=01/day=02"
    folder.mkdir(parents=True)
    start = int(dt.datetime(2024, 1, 2, 10, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)
    lines = [
        f'{{"symbol":"{s}","price":{100 + i}.5,"volume":1,"trade_ts":{start + 1000 * i},"conditions":[],'
        f'"received_ts":{start + 1000 * i + 2},"source":"finnhub","schema_version":1,'
        f'"kafka_partition":{p},"kafka_offset":{i}}}'
        for p, s in enumerate(("AAPL", "MSFT", "BINANCE:BTCUSDT"))
        for i in range(50)
    ]
    (folder / "stock-data+0+0-149.jsonl").write_text("\n".join(lines) + "\n")
    db, rows = _load(tmp_path, tmp_path / "lake")
    assert rows == 150

    outputs, printed = _execute(tmp_path, db, monkeypatch)
    # One minute: no symbol has two minute returns, and no symbol paused for a minute.
    assert "no volatility yet" in printed
    assert "no gaps of more than 60 seconds" in printed
    _drawn(tmp_path, outputs, ("price_trades", "candles_vwap", "movers", "moving_averages", "feed_latency"))
