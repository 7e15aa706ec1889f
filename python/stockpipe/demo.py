"""``stockpipe demo``: the pipeline end to end on the embedded defaults.

It starts a throwaway dev stack (its own home and ports, removed afterwards), the Finnhub
simulator (or the real feed when ``FINNHUB_API_KEY`` is set), the producer and the sink, then
prints the counts of every stage so they can be checked against each other.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import threading
import time
from pathlib import Path

from stockpipe.config import Config

__all__ = ["run_demo"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _count_lines(root: Path) -> tuple[int, int]:
    objects = lines = 0
    for path in root.rglob("*.jsonl"):
        objects += 1
        with open(path, "rb") as handle:
            lines += sum(1 for _ in handle)
    return objects, lines


def run_demo(cfg: Config, *, seconds: float = 60.0) -> int:
    """Runs simulator → producer → Kafka → sink → local files for ``seconds`` and reports counts."""
    from stockpipe._status import StatusLine
    from stockpipe.consumer import Sink
    from stockpipe.dev import stack
    from stockpipe.producer import Producer, format_status
    from stockpipe.simulator import run_simulator

    home = Path(cfg.dev.cache_dir) / "demo"
    if stack.read_state(dataclasses.replace(cfg.dev, home=str(home))) is None and home.exists():
        shutil.rmtree(home)
    cfg.dev = dataclasses.replace(cfg.dev, home=str(home), kafka_port=19092, s3_port=19000, brokers=1)
    output = Path("stockpipe-data") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    _say(f"[1/4] starting a local stack (Kafka KRaft + S3) under {home} ...")
    state = stack.up(cfg, say=_say)
    try:
        cfg.kafka.bootstrap_servers = state["bootstrap_servers"]
        live = bool(cfg.finnhub.api_key)
        sim_stats: dict[str, float] = {}
        thread = None
        if not live:
            sim = dataclasses.replace(cfg.simulate, port=0, duration_s=seconds, rate=max(cfg.simulate.rate, 200.0))
            ready = threading.Event()
            address: list[str] = []

            def on_ready(addr: str) -> None:
                address.append(addr)
                ready.set()

            def serve() -> None:
                sim_stats.update(run_simulator(sim, on_ready=on_ready))

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            if not ready.wait(10):
                _say("the simulator did not start")
                return 1
            cfg.finnhub.ws_url, cfg.finnhub.api_key = f"ws://{address[0]}", "demo"
            cfg.finnhub.symbols = list(sim.symbols)
            _say(f"[2/4] simulator on ws://{address[0]} ({sim.rate:.0f} trades/s); producing for {seconds:.0f}s ...")
        else:
            _say(f"[2/4] streaming the real Finnhub feed for {seconds:.0f}s ...")
        cfg.sink.output = f"file://{output.resolve()}"
        cfg.sink.batch_seconds = 2.0
        cfg.kafka.group_id = f"stockpipe-demo-{int(time.time())}"
        sink = Sink(cfg)
        sink_thread = threading.Thread(target=lambda: sink.run(duration=seconds + 12), daemon=True)
        sink_thread.start()
        line = StatusLine(format_status)
        try:
            stats = Producer(cfg).run(duration=seconds + 2, status=line)
        finally:
            line.close()
        if thread is not None:
            thread.join(timeout=15)
        _say("[3/4] the sink writes the last batches ...")
        sink_thread.join(timeout=seconds + 60)
        objects, lines = _count_lines(output)
        _say("[4/4] report")
        if not live:
            print(f"trades sent by the simulator    : {sim_stats.get('trades_sent', 0):.0f}")
        print(f"trades acknowledged by Kafka    : {stats.acked}")
        print(f"records in raw JSONL objects    : {lines} in {objects} objects under {output}/raw.data/")
        print(f"dead letters                    : {stats.dead_letters}")
        print("not built yet: the Parquet transform, the warehouse load and the charts")
        print("explore: stockpipe --help, python -m stockpipe.producer --help, python -m stockpipe.consumer --help")
        ok = stats.failed == 0 and lines == stats.acked and (live or stats.acked == sim_stats.get("trades_sent", 0))
        if not ok:
            print("the counts of the stages do not agree", file=sys.stderr)
        return 0 if ok else 1
    finally:
        stack.down(cfg, say=lambda _m: None)
