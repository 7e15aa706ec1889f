"""A tuned Python equivalent: websockets (asyncio) + confluent-kafka, idempotent, acks=all, keyed.

usage: confluent_producer.py WS_URL BOOTSTRAP TOPIC N SYMBOLS (linger: BENCH_LINGER_MS, set by bench/run.py)
"""

import asyncio
import json
import os
import sys
import time

import websockets
from confluent_kafka import Producer

url, bootstrap, topic, n, symbols = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(",")
producer = Producer({
    "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": int(os.environ["BENCH_LINGER_MS"]),
    "batch.size": 1_000_000, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000,
})  # fmt: skip
state = {"received": 0, "acked": 0, "first": 0.0, "last_ack": 0.0}
latencies: list[float] = []


def report(t0: float):
    def cb(err: object, _msg: object) -> None:
        if err is None:
            now = time.perf_counter()
            state["acked"] += 1
            state["last_ack"] = now
            latencies.append(now - t0)

    return cb


async def main() -> None:
    async with websockets.connect(f"{url}/?token=bench", max_size=None) as ws:
        for s in symbols:
            await ws.send(json.dumps({"type": "subscribe", "symbol": s}))
        async for message in ws:
            t0 = time.perf_counter()
            if not state["first"]:
                state["first"] = t0
            data = json.loads(message)
            if data.get("type") != "trade":
                continue
            cb = report(t0)
            for t in data["data"]:
                value = json.dumps({
                    "symbol": t["s"], "price": t["p"], "volume": t.get("v"), "trade_ts": t["t"],
                    "conditions": t.get("c"), "received_ts": int(time.time() * 1000), "source": "finnhub",
                    "schema_version": 1,
                })  # fmt: skip
                while True:
                    try:
                        producer.produce(topic, key=t["s"], value=value, on_delivery=cb)
                        break
                    except BufferError:
                        producer.poll(0.01)
                state["received"] += 1
            producer.poll(0)
            if state["received"] >= n:
                break


asyncio.run(main())
producer.flush(60)
latencies.sort()
q = lambda p: 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None  # noqa: E731
print(json.dumps({
    "trades": state["received"], "acked": state["acked"], "active_s": state["last_ack"] - state["first"],
    "p50_ms": q(0.5), "p99_ms": q(0.99),
}))  # fmt: skip
