"""stockpipe's Rust sink through its Python API; stops (gracefully) once N records are written.

usage: rust_sink.py BOOTSTRAP TOPIC GROUP ENDPOINT BUCKET PREFIX N BATCH SECONDS TAIL
(ENDPOINT file:///dir writes local files under dir instead of S3)
"""

import json
import sys
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
seen = {"first": 0.0, "bulk": 0.0, "bulk_records": 0}
sink = stockpipe.Sink(cfg)


def status(c: dict) -> None:
    written = c.get("records_written", 0)
    if written >= n - tail and not seen["bulk"]:
        # The sink's own clock readings (µs since the epoch): when it read its first record, and
        # when the write that ended the bulk finished (the tail's partial batches wait for the
        # timer), moved onto perf_counter's clock, which the harness samples the CPU with.
        shift = time.perf_counter() - time.time()
        seen["first"] = c["first_record_unix_us"] / 1e6 + shift
        seen["bulk"], seen["bulk_records"] = c["last_write_unix_us"] / 1e6 + shift, written
    if written >= n:
        sink.stop()  # as on Ctrl-C: writes what it holds and commits


s = sink.run(status=status)
print(json.dumps({
    "records": s.records_written, "objects": s.objects, "active_s": seen["bulk"] - seen["first"],
    "bulk_records": seen["bulk_records"], "window": [seen["first"], seen["bulk"]],
}))  # fmt: skip
