"""The broker's own floor: confluent-kafka producing at a steady rate, no WebSocket, no parsing,
keyed by the same symbols in turn (so the same partitions). Latency is produce() → acknowledgement.
usage: broker_floor.py BOOTSTRAP TOPIC RATE SECONDS SYMBOLS (linger: BENCH_LINGER_MS, set by bench/run.py)"""

import json
import os
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
keys = [s.encode() for s in sys.argv[5].split(",")]
p = Producer({
    "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
    "linger.ms": int(os.environ["BENCH_LINGER_MS"]), "compression.type": "lz4",
})  # fmt: skip
lat: list[float] = []
value = b'{"symbol":"AAPL","price":129.575,"volume":1,"trade_ts":1672348887785,"conditions":["1"],"source":"finnhub"}'
n = int(rate * seconds)
p.produce(topic, key=b"AAPL", value=value)  # connected, producer id assigned: measure the steady state
p.flush(30)
start = time.perf_counter()
first = last = 0.0
for i in range(n):
    due = start + i / rate
    while (now := time.perf_counter()) < due:
        p.poll(max(0.0, min(0.001, due - now)))
    t0 = time.perf_counter()
    first = first or t0
    p.produce(
        topic,
        key=keys[i % len(keys)],
        value=value,
        on_delivery=lambda e, m, t0=t0: e or lat.append(time.perf_counter() - t0),
    )
p.flush(30)
last = time.perf_counter()
lat.sort()
q = lambda x: 1000 * lat[min(len(lat) - 1, int(x * len(lat)))]  # noqa: E731
print(json.dumps({"trades": n, "acked": len(lat), "active_s": last - first, "p50_ms": q(0.5), "p99_ms": q(0.99)}))
