"""WebSocket frames → Kafka: full speed, and the frame → ack latency at a steady rate."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

from harness import HERE, PY, SYMBOLS, Row, measure
from services import Simulator, ensure_topic


def bench_ws_to_kafka(state: dict[str, Any], n: int, rounds: int) -> list[Row]:
    bootstrap = state["bootstrap_servers"]
    contenders = {
        "stockpipe (Rust producer)": HERE / "contenders/rust_producer.py",
        "confluent-kafka + websockets": HERE / "contenders/confluent_producer.py",
        "seed: websocket-client + kafka-python": HERE / "contenders/seed_producer.py",
    }
    rows = {name: Row("WS → Kafka acked", name) for name in contenders}
    port = 17100
    for _ in range(rounds):
        for name, script in contenders.items():
            port += 1
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            ensure_topic(bootstrap, topic)
            sim = Simulator(port, rate=5_000_000, trades=n)
            try:
                rows[name].runs.append(measure([PY, str(script), sim.url, bootstrap, topic, str(n), SYMBOLS]))
            finally:
                sim.close()
            print(f"  {name}: {rows[name].runs[-1].out}", file=sys.stderr)
    return list(rows.values())


def bench_latency_at_rate(state: dict[str, Any], rate: float, seconds: float, rounds: int) -> list[Row]:
    """frame → ack latency at a steady rate (the target: p99 ≤ 10 ms at 10k trades/s), contenders
    alternating over ``rounds`` (one 20 s window's p99 moves by 10–20 ms with a single stall)."""
    bootstrap = state["bootstrap_servers"]
    n = int(rate * seconds)
    contenders = [
        ("stockpipe (Rust producer)", "rust_producer.py"),
        ("confluent-kafka + websockets", "confluent_producer.py"),
        ("seed: websocket-client + kafka-python", "seed_producer.py"),
        ("reference: the broker alone (confluent-kafka paced produce → ack, no WebSocket)", "broker_floor.py"),
    ]
    rows = {name: Row(f"latency at {rate:,.0f} trades/s", name) for name, _ in contenders}

    def floor(topic: str, secs: float) -> list[str]:
        return [PY, str(HERE / "contenders/broker_floor.py"), bootstrap, topic, str(rate), str(secs), SYMBOLS]

    # Not measured: a few seconds at the same rate first, so no contender's window holds a fresh
    # broker's first seconds of paced load (p99s of 20–60 ms had shown there, once).
    topic = f"bench-lat-warm-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic)
    subprocess.run(floor(topic, 5), check=True, capture_output=True)
    for _ in range(rounds):
        for i, (name, script) in enumerate(contenders):
            topic = f"bench-lat-{uuid.uuid4().hex[:8]}"
            ensure_topic(bootstrap, topic)
            if script == "broker_floor.py":
                run = measure(floor(topic, seconds))
            else:
                sim = Simulator(17300 + i, rate=rate, trades=n)  # one connection: its rate is the total
                try:
                    run = measure([PY, str(HERE / "contenders" / script), sim.url, bootstrap, topic, str(n), SYMBOLS])
                finally:
                    sim.close()
            rows[name].runs.append(run)
            print(f"  latency {name}: {run.out}", file=sys.stderr)
    return list(rows.values())
