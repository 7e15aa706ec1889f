"""The seed's design: websocket-client + json + kafka-python, one send per trade (its defaults).

usage: seed_producer.py WS_URL BOOTSTRAP TOPIC N SYMBOLS
Prints one JSON line: trades, acked, active_s (first frame → last ack), p50/p99 frame→ack ms.
"""

import json
import sys
import time

import websocket
from kafka import KafkaProducer

url, bootstrap, topic, n, symbols = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(",")
producer = KafkaProducer(bootstrap_servers=bootstrap)
state = {"received": 0, "acked": 0, "first": 0.0, "last_ack": 0.0}
latencies: list[float] = []


def acked(t0: float, _md: object) -> None:
    now = time.perf_counter()
    state["acked"] += 1
    state["last_ack"] = now
    latencies.append(now - t0)


def on_message(ws: websocket.WebSocketApp, message: str) -> None:
    t0 = time.perf_counter()
    if not state["first"]:
        state["first"] = t0
    data = json.loads(message)
    if data.get("type") != "trade":
        return
    for t in data["data"]:
        record = {
            "symbol": t["s"], "price": t["p"], "volume": t.get("v"), "trade_ts": t["t"],
            "conditions": t.get("c"), "received_ts": int(time.time() * 1000), "source": "finnhub", "schema_version": 1,
        }  # fmt: skip
        producer.send(topic, value=json.dumps(record).encode("utf-8")).add_callback(acked, t0)
        state["received"] += 1
    if state["received"] >= n:
        ws.close()


def on_open(ws: websocket.WebSocketApp) -> None:
    for s in symbols:
        ws.send(json.dumps({"type": "subscribe", "symbol": s}))


websocket.WebSocketApp(f"{url}/?token=bench", on_open=on_open, on_message=on_message).run_forever()
producer.flush()
latencies.sort()
q = lambda p: 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None  # noqa: E731
print(json.dumps({
    "trades": state["received"], "acked": state["acked"], "active_s": state["last_ack"] - state["first"],
    "p50_ms": q(0.5), "p99_ms": q(0.99),
}))  # fmt: skip
