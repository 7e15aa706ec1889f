"""stockpipe's Rust producer through its Python API. usage: rust_producer.py WS_URL BOOTSTRAP TOPIC N SYMBOLS
(linger: BENCH_LINGER_MS, set by bench/run.py)"""

import json
import os
import sys

import stockpipe

url, bootstrap, topic, n, symbols = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(",")
cfg = stockpipe.load_config(env={}, use_default_file=False)
cfg.finnhub.ws_url, cfg.finnhub.api_key, cfg.finnhub.symbols = url, "bench", symbols
cfg.finnhub.dedupe_window_ms = 0
cfg.kafka.bootstrap_servers, cfg.kafka.topic = bootstrap, topic
cfg.kafka.linger_ms = int(os.environ["BENCH_LINGER_MS"])
s = stockpipe.Producer(cfg).run(max_messages=n)
print(json.dumps({
    "trades": s.trades, "acked": s.acked, "active_s": s.active_s, "p50_ms": s.latency_p50_ms, "p99_ms": s.latency_p99_ms,
}))  # fmt: skip
