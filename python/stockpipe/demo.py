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
from typing import TYPE_CHECKING

from stockpipe.config import Config
from stockpipe.exceptions import ConfigError

if TYPE_CHECKING:
    from stockpipe._native import StopHandle
    from stockpipe.consumer import SinkStats
    from stockpipe.etl import TransformStats
    from stockpipe.producer import ProducerStats
    from stockpipe.warehouse import Result

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


@dataclasses.dataclass
class _Simulator:
    """The Finnhub simulator on a thread of its own, sending a budget of trades.

    A budget rather than a length: the simulator then stays connected and only pings, and the
    producer stops once it has published them all, with no reconnect at the end.
    """

    budget: int
    stop: StopHandle
    thread: threading.Thread
    stats: dict[str, float]

    @classmethod
    def start(cls, cfg: Config, seconds: float) -> _Simulator | None:
        """Starts it and points ``cfg.finnhub`` at it; None when it does not come up."""
        from stockpipe._native import StopHandle
        from stockpipe.simulator import run_simulator

        rate = max(cfg.simulate.rate, 200.0)
        budget = max(1, round(rate * seconds))
        settings = dataclasses.replace(cfg.simulate, port=0, duration_s=None, max_trades=budget, rate=rate)
        ready = threading.Event()
        address: list[str] = []
        stats: dict[str, float] = {}
        stop = StopHandle()

        def on_ready(addr: str) -> None:
            address.append(addr)
            ready.set()

        def serve() -> None:
            stats.update(run_simulator(settings, on_ready=on_ready, stop=stop))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        if not ready.wait(10):
            return None
        cfg.finnhub.ws_url, cfg.finnhub.api_key = f"ws://{address[0]}", "demo"
        cfg.finnhub.symbols = list(settings.symbols)
        _say(
            f"[2/6] simulator on ws://{address[0]} ({settings.rate:.0f} trades/s); "
            f"producing {budget} trades (about {seconds:.0f}s) ..."
        )
        return cls(budget, stop, thread, stats)

    @property
    def sent(self) -> int:
        return int(self.stats.get("trades_sent", 0))


@dataclasses.dataclass
class _Ingested:
    """What the producer and the sink did, and what the raw zone holds."""

    produced: ProducerStats
    read_back: int
    objects: int
    lines: int


def _ingest(cfg: Config, seconds: float, sim: _Simulator | None, output: Path) -> _Ingested:
    """Steps 2 and 3: the producer publishes the trades while the sink writes them to ``output``."""
    from stockpipe._status import StatusLine
    from stockpipe.consumer import Sink
    from stockpipe.producer import Producer, format_status

    cfg.sink.output = f"file://{output.resolve()}"
    cfg.sink.batch_seconds = 2.0
    cfg.sink.status_interval = 0.2
    cfg.kafka.group_id = f"stockpipe-demo-{int(time.time())}"
    sink = Sink(cfg)
    sink_stats: list[SinkStats] = []
    written = [0.0]

    def sink_status(counters: Mapping[str, float]) -> None:
        written[0] = counters.get("records_written", 0.0)

    sink_thread = threading.Thread(target=lambda: sink_stats.append(sink.run(status=sink_status)), daemon=True)
    sink_thread.start()
    line = StatusLine(format_status)
    try:
        # On the simulator the length only bounds a run that falls behind (a slow first connection).
        length = seconds + 30 if sim else seconds
        produced = Producer(cfg).run(duration=length, max_messages=sim.budget if sim else None, status=line)
    finally:
        line.close()
        if sim:  # the producer has stopped (done or interrupted); the simulator stops after it
            sim.stop.stop()
    if sim:
        sim.thread.join(timeout=15)
    _say("[3/6] the sink writes the last batches ...")
    # Every acknowledged trade is in Kafka: the sink stops once it has written them all.
    deadline = time.monotonic() + 60
    while written[0] < produced.acked and sink_thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    sink.stop()
    sink_thread.join(timeout=60)
    objects, lines = _count_lines(output)
    return _Ingested(produced, sink_stats[0].records_in if sink_stats else -1, objects, lines)


@dataclasses.dataclass
class _Loaded:
    """The transform's and the load's results, and what the report shows of the warehouse."""

    etl: TransformStats
    rows: int
    warehouse: str
    bars: Result
    chart: Path


def _transform_and_load(cfg: Config, output: Path) -> _Loaded:
    """Steps 4 and 5: raw JSONL → Parquet with the Rust engine, then Parquet → DuckDB, and a chart."""
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
    return _Loaded(etl, loaded.total_rows, warehouse, bars, chart)


def _report(ingested: _Ingested, loaded: _Loaded, sim: _Simulator | None, output: Path) -> int:
    """Step 6: every stage's count, the busiest symbol's last minute bars, where to go next.
    Returns the exit code: 0 when the counts agree."""
    from stockpipe.warehouse import Result

    produced, lines, etl = ingested.produced, ingested.lines, loaded.etl
    _say("[6/6] report")
    if sim:
        print(f"trades sent by the simulator       : {sim.sent}")
    print(f"trades acknowledged by Kafka       : {produced.acked}")
    print(f"records read back from Kafka       : {ingested.read_back}")
    objects = _count(ingested.objects, "object")
    print(f"records in raw JSONL objects       : {lines} in {objects} under {output}/raw.data/")
    print(f"rows in Parquet (processed.data/)  : {etl.rows} in {_count(etl.files, 'file')}")
    print(f"quarantined by the cleaning rules  : {etl.quarantined}")
    print(f"duplicates dropped                 : {etl.duplicates}")
    print(f"rows in DuckDB stock_prices        : {loaded.rows}")
    print(f"dead letters                       : {produced.dead_letters}")
    print()
    rows = loaded.bars.rows
    busiest = max({r[0] for r in rows}, key=lambda s: sum(r[7] for r in rows if r[0] == s), default="")
    print(f"last minute bars of {busiest}:")
    print(Result(loaded.bars.columns, [r for r in rows if r[0] == busiest][-5:]).format("table"))
    print()
    print(f"chart: {loaded.chart}")
    print("explore further:")
    print(f"  stockpipe query ohlcv_hour --warehouse {loaded.warehouse}")
    print(f"  stockpipe query top_movers --warehouse {loaded.warehouse} --format csv")
    notebook = Path("notebooks/analytics.ipynb").resolve()
    if notebook.is_file():  # a checkout of the repository (a wheel ships no notebooks)
        print(f"  STOCKPIPE_WAREHOUSE_WAREHOUSE={loaded.warehouse} jupyter lab {notebook}  (pip install jupyterlab)")
    print("  stockpipe --help")
    ok = (
        produced.failed == 0
        and lines == produced.acked == ingested.read_back
        and (sim is None or produced.interrupted or produced.acked == sim.sent)
        and etl.rows + etl.quarantined + etl.duplicates == lines
        and loaded.rows == etl.rows
    )
    if produced.interrupted and sim:
        print(
            "interrupted: the producer stopped before the simulator, so trades sent after it stopped "
            "were never read; every acknowledged trade is counted at each stage after it",
            file=sys.stderr,
        )
    if not ok:
        print("the counts of the stages do not agree", file=sys.stderr)
    return 1 if not ok else 130 if produced.interrupted else 0


def run_demo(cfg: Config, *, seconds: float = 60.0) -> int:
    """Runs simulator → producer → Kafka → sink → Parquet → DuckDB for ``seconds`` and reports.

    Returns the exit code: 0 when every stage's count agrees, 1 when not, 130 when interrupted.
    """
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--seconds {seconds:g}: must be greater than zero")
    from stockpipe.dev import stack

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
        sim = None
        if cfg.finnhub.api_key:
            _say(f"[2/6] streaming the real Finnhub feed for {seconds:.0f}s ...")
        elif (sim := _Simulator.start(cfg, seconds)) is None:
            _say("the simulator did not start")
            return 1
        ingested = _ingest(cfg, seconds, sim, output)
        loaded = _transform_and_load(cfg, output)
        return _report(ingested, loaded, sim, output)
    finally:
        stack.down(cfg, say=lambda _m: None)
