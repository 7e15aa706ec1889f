"""A Python equivalent with confluent-kafka + boto3 and the same batch policy.

usage: confluent_sink.py BOOTSTRAP TOPIC GROUP ENDPOINT BUCKET PREFIX N BATCH SECONDS TAIL

No contender knows when its input ends: each flushes by size or by the timer. The rate counts
the bulk (first record → all but TAIL records written), since the last partial batches wait
for the timer by design.
"""

import datetime as dt
import json
import sys
import time

import boto3
from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, group, endpoint, bucket, prefix = sys.argv[1:7]
n, batch_size, batch_s, tail = int(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
s3 = boto3.client("s3", endpoint_url=endpoint)
consumer = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
})  # fmt: skip
consumer.subscribe([topic])
batch: list[bytes] = []
offsets: dict[int, int] = {}
written = objects = 0
first = last = 0.0
bulk = {"t": 0.0, "records": 0}
opened = time.monotonic()


def flush() -> None:
    global batch, written, objects, last, opened
    if batch:
        day = dt.datetime.now(dt.timezone.utc)
        key = f"{prefix}/raw.data/year={day:%Y}/month={day:%m}/day={day:%d}/{time.time_ns()}.jsonl"
        s3.put_object(Bucket=bucket, Key=key, Body=b"\n".join(batch) + b"\n", ServerSideEncryption="AES256")
        consumer.commit(offsets=[TopicPartition(topic, p, o + 1) for p, o in offsets.items()], asynchronous=False)
        offsets.clear()
        written += len(batch)
        objects += 1
        last = time.perf_counter()
        if not bulk["t"] and written >= n - tail:
            bulk["t"], bulk["records"] = last, written
        batch = []
    opened = time.monotonic()


while written < n:
    for m in consumer.consume(num_messages=1000, timeout=0.2):
        if m.error():
            continue
        if not first:
            first = time.perf_counter()
        batch.append(m.value())
        offsets[m.partition()] = m.offset()
        if len(batch) >= batch_size:
            flush()
    if time.monotonic() - opened >= batch_s:
        flush()
consumer.close()
print(json.dumps({
    "records": written, "objects": objects, "active_s": bulk["t"] - first, "bulk_records": bulk["records"],
    "window": [first, bulk["t"]],
}))  # fmt: skip
