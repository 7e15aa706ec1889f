"""Raw JSONL → Parquet: the Rust engine, the Glue job on local PySpark, pyarrow and DuckDB on the
same files."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import sys
from pathlib import Path

from harness import PY, ROOT, SYMBOLS, Row, measure


def write_raw_lines(root: Path, n: int, days: int = 2, objects_per_day: int = 40) -> int:
    """Clean raw JSONL in the sink's layout (no dirty lines: pyarrow and DuckDB have no quarantine)."""
    rng = random.Random(11)
    syms = SYMBOLS.split(",")
    per_day = n // days
    size = 0
    for d in range(days):
        day = dt.date(2024, 3, 4) + dt.timedelta(days=d)
        base = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
        folder = root / f"raw.data/year={day:%Y}/month={day:%m}/day={day:%d}"
        folder.mkdir(parents=True)
        per_obj = per_day // objects_per_day
        for o in range(objects_per_day):
            lines = []
            for i in range(per_obj):
                k = o * per_obj + i
                ts = base + k * 80_000_000 // per_day
                lines.append(
                    f'{{"symbol":"{syms[k % len(syms)]}","price":{rng.uniform(10, 500):.4f},"volume":{rng.randint(1, 500)},'
                    f'"trade_ts":{ts},"conditions":["1","12"],"received_ts":{ts + 3},"source":"finnhub","schema_version":1,'
                    f'"kafka_partition":{d},"kafka_offset":{k}}}'
                )
            body = ("\n".join(lines) + "\n").encode()
            (folder / f"stock-data+{d}+{o:020}.jsonl").write_bytes(body)
            size += len(body)
    return size


PYARROW_ETL = """
import glob, json, sys, pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq
root = sys.argv[1]; rows = 0
for day in sorted(glob.glob(root + '/raw.data/year=*/month=*/day=*')):
    t = pa.concat_tables([pj.read_json(f) for f in sorted(glob.glob(day + '/*.jsonl'))])
    out = day.replace('raw.data', 'processed.data'); import os; os.makedirs(out, exist_ok=True)
    pq.write_table(t, out + '/part-00000.parquet', compression='zstd'); rows += t.num_rows
print(json.dumps({'rows': rows}))
"""


DUCKDB_ETL = """
import json, sys, duckdb
root = sys.argv[1]; con = duckdb.connect()
con.execute(f"COPY (SELECT *, year(make_timestamp(trade_ts * 1000)) AS year, month(make_timestamp(trade_ts * 1000)) AS month, day(make_timestamp(trade_ts * 1000)) AS day FROM read_json_auto('{root}/raw.data/*/*/*/*.jsonl')) TO '{root}/processed.data' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month, day), OVERWRITE_OR_IGNORE)")
print(json.dumps({'rows': con.execute(f"SELECT count(*) FROM read_parquet('{root}/processed.data/*/*/*/*.parquet')").fetchone()[0]}))
"""


RUST_ETL = """
import json, sys, stockpipe
root = 'file://' + sys.argv[1]
cfg = stockpipe.load_config(env={}, use_default_file=False)
s = stockpipe.transform(root, root, config=cfg, full=True)
print(json.dumps({'rows': s.rows, 'quarantined': s.quarantined}))
"""


def bench_jsonl_to_parquet(n: int, rounds: int, work: Path) -> list[Row]:
    src = work / "raw-src"
    size = write_raw_lines(src, n)
    contenders = {
        "stockpipe (Rust engine, shared rules)": [PY, "-c", RUST_ETL],
        "Glue job on local PySpark (shared rules)": [PY, str(ROOT / "glue/stockpipe_etl.py"), "--full", "true", "--input", "file://{d}", "--output", "file://{d}"],
        "pyarrow json reader + parquet writer (no rules)": [PY, "-c", PYARROW_ETL],
        "DuckDB COPY (no rules)": [PY, "-c", DUCKDB_ETL],
    }  # fmt: skip
    rows = {name: Row("raw JSONL → Parquet", name, note=f"{size / 1e6:,.0f} MB") for name in contenders}
    for _ in range(rounds):
        for name, cmd in contenders.items():
            d = work / "etl-run"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(src, d)
            args = [a.replace("{d}", str(d)) for a in cmd] + ([] if "stockpipe_etl" in " ".join(cmd) else [str(d)])
            run = measure(args)
            run.out.setdefault("rows", run.out.get("rows"))
            run.out["mb"] = size / 1e6
            rows[name].runs.append(run)
            print(f"  {name}: {run.wall_s:.1f}s {run.out}", file=sys.stderr)
    return list(rows.values())
