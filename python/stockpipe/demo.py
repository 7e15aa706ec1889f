"""``stockpipe demo``: the pipeline end to end on the embedded defaults.

It starts a throwaway dev stack (its own home and ports, removed afterwards), the Finnhub
simulator (or the real feed when ``FINNHUB_API_KEY`` is set), the producer, the sink, the Rust
transform and the DuckDB load, then prints the counts of every stage so they can be checked
against each other, a table of minute bars, and writes a chart.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from stockpipe.config import Config
from stockpipe.exceptions import ConfigError

__all__ = ["DEMO_SETS", "run_demo"]

#: Settings the demo chooses itself, whatever a config file or the environment says: its own
#: plaintext one-broker stack on its own ports and home, the simulator's port and length (``--seconds``),
#: and the sink's group. Its command line does not offer them.
DEMO_SETS = frozenset(
    [("dev", k) for k in ("home", "brokers", "tls", "sasl", "kafka_port", "s3_port", "bucket")]
    + [("simulate", k) for k in ("host", "port", "token", "duration_s")]
    + [
        ("kafka", k)
        for k in (
            "bootstrap_servers",
            "group_id",
            "security_protocol",
            "ssl_ca_location",
            "ssl_certificate_location",
            "ssl_key_location",
            "ssl_key_password",
            "ssl_endpoint_identification",
            "sasl_mechanism",
            "sasl_username",
            "sasl_password",
        )
    ]
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _count_lines(root: Path) -> tuple[int, int]:
    objects = lines = 0
    for path in root.rglob("*.jsonl"):
        objects += 1
        with open(path, "rb") as handle:
            lines += sum(1 for _ in handle)
    return objects, lines


SECONDS_SQL = (
    "SELECT symbol, DATE_TRUNC('second', trade_ts) AS second, AVG(CAST(price AS DOUBLE PRECISION)) AS price, "
    "COUNT(*) AS trades FROM stock_prices GROUP BY symbol, DATE_TRUNC('second', trade_ts) ORDER BY symbol, second"
)


def _chart(per_second: object, path: Path) -> None:
    """Each symbol's price (% from its first second) and trades per second, as a PNG.

    Trades, not volume: a crypto pair trades fractions of a coin, which a shared volume axis shows as zero.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = per_second.to_pandas()  # type: ignore[attr-defined]
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for symbol, b in df.groupby("symbol"):
        price = b.price.astype(float)
        axes[0].plot(b.second, 100 * (price / price.iloc[0] - 1), label=symbol)
        axes[1].plot(b.second, b.trades, alpha=0.7)
    axes[0].set_ylabel("price, % from first second")
    axes[0].legend(loc="upper left")
    axes[1].set_ylabel("trades / s")
    fig.suptitle("stockpipe demo: trades loaded into DuckDB")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run_demo(cfg: Config, *, seconds: float = 60.0) -> int:
    """Runs simulator → producer → Kafka → sink → Parquet → DuckDB for ``seconds`` and reports."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--seconds {seconds:g}: must be greater than zero")
    from stockpipe._native import StopHandle
    from stockpipe._status import StatusLine
    from stockpipe.consumer import Sink
    from stockpipe.dev import stack
    from stockpipe.producer import Producer, format_status
    from stockpipe.simulator import run_simulator

    home = Path(cfg.dev.cache_dir) / "demo"
    if stack.read_state(dataclasses.replace(cfg.dev, home=str(home))) is None and home.exists():
        shutil.rmtree(home)
    defaults = Config()
    for section, key in DEMO_SETS:
        setattr(getattr(cfg, section), key, getattr(getattr(defaults, section), key))
    cfg.dev = dataclasses.replace(cfg.dev, home=str(home), kafka_port=19092, s3_port=19000, brokers=1)
    output = Path("stockpipe-data") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    _say(f"[1/6] starting a local stack (Kafka KRaft + S3) under {home} ...")
    state = stack.up(cfg, say=_say)
    try:
        cfg.kafka.bootstrap_servers = state["bootstrap_servers"]
        live = bool(cfg.finnhub.api_key)
        sim_stats: dict[str, float] = {}
        sim_stop = StopHandle()
        thread = None
        budget: int | None = None
        if not live:
            # A budget of trades rather than a length: the simulator then stays connected and only pings,
            # and the producer stops once it has published them all, with no reconnect at the end.
            rate = max(cfg.simulate.rate, 200.0)
            budget = max(1, round(rate * seconds))
            sim = dataclasses.replace(cfg.simulate, port=0, duration_s=None, max_trades=budget, rate=rate)
            ready = threading.Event()
            address: list[str] = []

            def on_ready(addr: str) -> None:
                address.append(addr)
                ready.set()

            def serve() -> None:
                sim_stats.update(run_simulator(sim, on_ready=on_ready, stop=sim_stop))

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            if not ready.wait(10):
                _say("the simulator did not start")
                return 1
            cfg.finnhub.ws_url, cfg.finnhub.api_key = f"ws://{address[0]}", "demo"
            cfg.finnhub.symbols = list(sim.symbols)
            pace = f"{sim.rate:.0f} trades/s"
            _say(f"[2/6] simulator on ws://{address[0]} ({pace}); producing {budget} trades (about {seconds:.0f}s) ...")
        else:
            _say(f"[2/6] streaming the real Finnhub feed for {seconds:.0f}s ...")
        cfg.sink.output = f"file://{output.resolve()}"
        cfg.sink.batch_seconds = 2.0
        cfg.sink.status_interval = 0.2
        cfg.kafka.group_id = f"stockpipe-demo-{int(time.time())}"
        sink = Sink(cfg)
        sink_stats: list[object] = []
        written = [0.0]

        def sink_status(counters: Mapping[str, float]) -> None:
            written[0] = counters.get("records_written", 0.0)

        sink_thread = threading.Thread(target=lambda: sink_stats.append(sink.run(status=sink_status)), daemon=True)
        sink_thread.start()
        line = StatusLine(format_status)
        try:
            # On the simulator the length only bounds a run that falls behind (a slow first connection).
            length = seconds if live else seconds + 30
            stats = Producer(cfg).run(duration=length, max_messages=budget, status=line)
        finally:
            line.close()
            # The producer has stopped (done or interrupted); the simulator stops after it.
            sim_stop.stop()
        if thread is not None:
            thread.join(timeout=15)
        _say("[3/6] the sink writes the last batches ...")
        # Every acknowledged trade is in Kafka: the sink stops once it has written them all.
        deadline = time.monotonic() + 60
        while written[0] < stats.acked and sink_thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        sink.stop()
        sink_thread.join(timeout=60)
        objects, lines = _count_lines(output)
        read_back = int(getattr(sink_stats[0], "records_in", -1)) if sink_stats else -1

        from stockpipe.etl import transform
        from stockpipe.warehouse import load, query

        lake = f"file://{output.resolve()}"
        _say("[4/6] raw JSONL → Parquet (Rust engine) ...")
        cfg.transform = dataclasses.replace(cfg.transform, input=lake, output=lake)
        etl = transform(config=cfg)
        db = output / "stockpipe.duckdb"
        warehouse = f"duckdb://{db.resolve()}"
        _say(f"[5/6] loading DuckDB {db} ...")
        loaded = load(lake, warehouse, config=cfg)
        bars = query("ohlcv_minute", warehouse, config=cfg)
        chart = output / "prices.png"
        _chart(query(SECONDS_SQL, warehouse, config=cfg), chart)

        _say("[6/6] report")
        sent = int(sim_stats.get("trades_sent", 0))
        if not live:
            print(f"trades sent by the simulator       : {sent}")
        print(f"trades acknowledged by Kafka       : {stats.acked}")
        print(f"records read back from Kafka       : {read_back}")
        print(f"records in raw JSONL objects       : {lines} in {_count(objects, 'object')} under {output}/raw.data/")
        print(f"rows in Parquet (processed.data/)  : {etl.rows} in {_count(etl.files, 'file')}")
        print(f"quarantined by the cleaning rules  : {etl.quarantined}")
        print(f"duplicates dropped                 : {etl.duplicates}")
        print(f"rows in DuckDB stock_prices        : {loaded.total_rows}")
        print(f"dead letters                       : {stats.dead_letters}")
        print()
        busiest = max({r[0] for r in bars.rows}, key=lambda s: sum(r[7] for r in bars.rows if r[0] == s), default="")
        from stockpipe.warehouse import Result

        recent = Result(bars.columns, [r for r in bars.rows if r[0] == busiest][-5:])
        print(f"last minute bars of {busiest}:")
        print(recent.format("table"))
        print()
        print(f"chart: {chart}")
        print("explore further:")
        print(f"  stockpipe query ohlcv_hour --warehouse {warehouse}")
        print(f"  stockpipe query top_movers --warehouse {warehouse} --format csv")
        notebook = "jupyter lab notebooks/analytics.ipynb  (pip install jupyterlab)"
        print(f"  STOCKPIPE_WAREHOUSE_WAREHOUSE={warehouse} {notebook}")
        print("  stockpipe --help")
        ok = (
            stats.failed == 0
            and lines == stats.acked == read_back
            and (live or stats.interrupted or stats.acked == sent)
            and etl.rows + etl.quarantined + etl.duplicates == lines
            and loaded.total_rows == etl.rows
        )
        if stats.interrupted and not live:
            print(
                "interrupted: the producer stopped before the simulator, so trades sent after it stopped "
                "were never read; every acknowledged trade is counted at each stage after it",
                file=sys.stderr,
            )
        if not ok:
            print("the counts of the stages do not agree", file=sys.stderr)
        return 1 if not ok else 130 if stats.interrupted else 0
    finally:
        stack.down(cfg, say=lambda _m: None)
