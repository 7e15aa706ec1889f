"""stockpipe's Rust sink through its Python API; stops (gracefully) once N records are written.

usage: rust_sink.py BOOTSTRAP TOPIC GROUP ENDPOINT BUCKET PREFIX N BATCH SECONDS TAIL
(ENDPOINT file:///dir writes local files under dir instead of S3)
"""

import json
import os
import signal
import sys
import threading
import time

import stockpipe

bootstrap, topic, group, endpoint, bucket, prefix = sys.argv[1:7]
n, batch_size, batch_s, tail = int(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
cfg = stockpipe.load_config(use_default_file=False)  # AWS_* from the environment
cfg.kafka.bootstrap_servers, cfg.kafka.topic, cfg.kafka.group_id = bootstrap, topic, group
cfg.s3.endpoint_url = endpoint
# ENDPOINT file:///dir: the local-files store instead of S3 (the sink's own ceiling, no S3 server).
cfg.sink.output = f"{endpoint}/{prefix}" if endpoint.startswith("file://") else f"s3://{bucket}/{prefix}"
cfg.sink.batch_size, cfg.sink.batch_seconds = batch_size, batch_s
cfg.sink.status_interval = 0.05
# The stop below is a self-sent SIGINT: make sure it raises KeyboardInterrupt even when this
# process was started with SIGINT ignored (a background job of a non-interactive shell).
signal.signal(signal.SIGINT, signal.default_int_handler)
seen = {"first": 0.0, "bulk": 0.0, "bulk_records": 0, "stopped": False}


def interrupt() -> None:
    # From another thread, so the interrupt reaches the sink's wait loop (which stops and flushes,
    # as on Ctrl-C) rather than this callback.
    threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT)).start()


def status(c: dict) -> None:
    try:
        now = time.perf_counter()
        if c.get("records_in", 0) and not seen["first"]:
            seen["first"] = now
        written = c.get("records_written", 0)
        if written >= n - tail and not seen["bulk"]:
            seen["bulk"], seen["bulk_records"] = now, written
        if written >= n and not seen["stopped"]:
            seen["stopped"] = True
            interrupt()
    except KeyboardInterrupt:
        interrupt()


s = stockpipe.Sink(cfg).run(status=status)
print(json.dumps({
    "records": s.records_written, "objects": s.objects, "active_s": seen["bulk"] - seen["first"],
    "bulk_records": seen["bulk_records"], "window": [seen["first"], seen["bulk"]],
}))  # fmt: skip
