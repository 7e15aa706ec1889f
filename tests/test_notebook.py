"""The analytics notebook runs headless on data the pipeline produced and draws its charts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from stockpipe import load_config, warehouse

from .conftest import ROOT
from .transform_helpers import write_raw


@pytest.mark.slow
def test_the_analytics_notebook_executes_and_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    import stockpipe

    write_raw(tmp_path / "lake", clean_per_day=3000, objects_per_day=2)
    lake = f"file://{tmp_path / 'lake'}"
    cfg = load_config(env={}, use_default_file=False)
    cfg.transform = dataclasses.replace(cfg.transform, input=lake, output=lake)
    stockpipe.transform(config=cfg)
    db = f"duckdb://{tmp_path / 'nb.duckdb'}"
    rows = warehouse.load(lake, db, config=cfg).total_rows
    assert rows > 6000

    charts = tmp_path / "charts"
    monkeypatch.setenv("STOCKPIPE_WAREHOUSE_WAREHOUSE", db)
    monkeypatch.setenv("STOCKPIPE_CHARTS", str(charts))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(ROOT / "notebooks/analytics.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    gaps = len(warehouse.query("gaps", db, config=cfg))
    assert gaps > 0, "the raw zone holds a symbol with a gap"
    drawn = ("price_trades", "candles_vwap", "movers", "moving_averages", "volatility", "gaps")
    assert len(images) == len(drawn)
    for name in drawn:
        png = charts / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000, name
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs)
    assert f"warehouse: {db}" in printed, "the notebook must follow the configured warehouse"
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert re.search(rf"^0\s+{rows}\s", shown, re.M), "the summary table counts every loaded trade"
