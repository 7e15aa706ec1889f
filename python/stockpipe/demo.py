"""``stockpipe demo``: the pipeline end to end on the embedded defaults."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time

from stockpipe.config import Config

__all__ = ["run_demo"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_demo(cfg: Config, *, seconds: float = 60.0) -> int:
    """Starts the dev stack and the simulator, streams trades through every stage that exists."""
    from stockpipe._status import StatusLine
    from stockpipe.dev import stack
    from stockpipe.producer import Producer, format_status
    from stockpipe.simulator import run_simulator

    started_stack = stack.read_state(cfg.dev) is None
    _say("[1/3] starting the local stack (Kafka + S3) ...")
    state = stack.up(cfg, say=_say)
    try:
        sim = dataclasses.replace(cfg.simulate, port=0, duration_s=seconds + 5, rate=max(cfg.simulate.rate, 200.0))
        ready = threading.Event()
        address: list[str] = []
        sim_stats: dict[str, float] = {}

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
        _say(f"[2/3] simulator on ws://{address[0]}; producing into Kafka for {seconds:.0f}s ...")
        cfg.finnhub.ws_url = f"ws://{address[0]}"
        cfg.finnhub.api_key = cfg.finnhub.api_key or "demo"
        cfg.finnhub.symbols = list(sim.symbols)
        cfg.kafka.bootstrap_servers = state["bootstrap_servers"]
        line = StatusLine(format_status)
        try:
            stats = Producer(cfg).run(duration=seconds, status=line)
        finally:
            line.close()
        thread.join(timeout=sim.duration_s or 0 + 10)
        _say("[3/3] report")
        print(f"trades sent by the simulator : {sim_stats.get('trades_sent', 0):.0f} (until it stopped)")
        print(f"trades published to Kafka    : {stats.trades}")
        print(f"trades acknowledged by Kafka : {stats.acked}")
        print(f"dead letters                 : {stats.dead_letters}")
        print("not built yet: the S3 sink, the Parquet transform and the warehouse load")
        print("explore: stockpipe --help")
        return 0 if stats.failed == 0 else 1
    finally:
        if started_stack:
            time.sleep(0.1)
            stack.down(cfg, say=_say)
