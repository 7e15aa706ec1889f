"""The transform on Spark: the body of the Glue job (``glue/stockpipe_etl.py``), also run by
``stockpipe etl --engine spark`` on local Spark.

It applies :mod:`stockpipe.rules` (imported, not copied) to every raw line, and writes the same
layout, schema, quarantine and per-day manifests as the Rust engine:

1. list ``raw.data/`` through Hadoop's file system API (``file:``, ``s3a:``, or Glue's ``s3:``);
2. keep the days whose raw objects differ from their manifest (or all selected with ``full``);
3. read those objects as bytes (``binaryFile``), split lines, clean each with the shared rules;
4. drop duplicates on (kafka_partition, kafka_offset), first read wins (object key, line);
5. replace each day's directory with one sorted Parquet file per day (more past
   ``rows_per_file``) and its quarantine as JSON lines; write the manifest last.

Only the standard library and ``pyspark`` are imported, so the package ships to Glue as a zip.
:mod:`stockpipe.spark_local` runs the same :func:`run` on a local Spark session.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import Any

from stockpipe import rules

__all__ = ["configure", "main", "run"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_HIDDEN = ("_obj", "_line")

SPARK_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # Milliseconds, as the rules say (Spark's default INT96 is read badly elsewhere).
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MILLIS",
    "spark.sql.parquet.writeLegacyFormat": "false",
}
HADOOP_CONF = {"mapreduce.fileoutputcommitter.marksuccessfuljobs": "false"}


def configure(spark: Any) -> None:
    """Sets what the rules need on a running session (Glue's or a local one)."""
    for k, v in SPARK_CONF.items():
        spark.conf.set(k, v)
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    for k, v in HADOOP_CONF.items():
        hconf.set(k, v)


def _schema() -> Any:
    from pyspark.sql import types as T

    kinds = {
        "string": T.StringType(),
        "double": T.DoubleType(),
        "int32": T.IntegerType(),
        "int64": T.LongType(),
        "timestamp_ms_utc": T.TimestampType(),
        f"decimal({rules.PRICE_PRECISION},{rules.PRICE_SCALE})": T.DecimalType(
            rules.PRICE_PRECISION, rules.PRICE_SCALE
        ),
    }
    fields = [T.StructField(name, kinds[kind], True) for name, kind in rules.COLUMNS]
    fields += [
        T.StructField("reason", T.StringType(), True),
        T.StructField("raw", T.StringType(), True),
        T.StructField("_obj", T.StringType(), False),
        T.StructField("_line", T.IntegerType(), False),
    ]
    fields += [T.StructField(c, T.StringType(), False) for c in rules.PARTITION_COLUMNS]
    return T.StructType(fields)


def _ts(ms: int | None) -> dt.datetime | None:
    return None if ms is None else _EPOCH + dt.timedelta(milliseconds=ms)


def _parse_object(key: str, day_iso: str, body: bytes) -> Iterator[tuple[Any, ...]]:
    """Executor side: one raw object → one tuple per non-blank line (clean or quarantined)."""
    day = dt.date.fromisoformat(day_iso)
    part = (f"{day.year:04}", f"{day.month:02}", f"{day.day:02}")
    n_cols = len(rules.COLUMNS)
    for i, line in enumerate(rules.split_lines(body)):
        if rules.is_blank(line):
            continue
        r = rules.clean_line(line, day)
        if isinstance(r, rules.Quarantined):
            yield (*([None] * n_cols), r.reason, r.raw, key, i, *part)
        else:
            yield (
                r.symbol,
                r.price,
                r.volume,
                _ts(r.trade_ts),
                r.conditions,
                _ts(r.received_ts),
                r.source,
                r.kafka_partition,
                r.kafka_offset,
                None,
                None,
                key,
                i,
                *part,
            )


class _FS:
    """Hadoop's file system API, so the job reads and writes wherever Spark can."""

    def __init__(self, spark: Any, root: str) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.root = root.rstrip("/")
        path = self._jvm.org.apache.hadoop.fs.Path(self.root)
        self._fs = path.getFileSystem(self._conf)
        self._root_str = self._fs.makeQualified(path).toString().rstrip("/")

    def _path(self, key: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(f"{self.root}/{key}")

    def uri(self, key: str) -> str:
        return f"{self.root}/{key}"

    def list(self, prefix: str) -> list[tuple[str, int]]:
        path = self._path(prefix)
        if not self._fs.exists(path):
            return []
        out = []
        it = self._fs.listFiles(path, True)
        while it.hasNext():
            st = it.next()
            full = st.getPath().toString()
            key = full[len(self._root_str) + 1 :] if full.startswith(self._root_str + "/") else full
            out.append((key, int(st.getLen())))
        return out

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        if not self._fs.exists(path):
            return None
        stream = self._fs.open(path)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write(self, key: str, data: bytes) -> None:
        out = self._fs.create(self._path(key), True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def delete(self, key: str) -> None:
        self._fs.delete(self._path(key), True)


def _day_path(day: dt.date) -> str:
    return f"year={day.year:04}/month={day.month:02}/day={day.day:02}"


def run(
    spark: Any,
    *,
    input_uri: str,
    output_uri: str,
    raw_prefix: str = "raw.data",
    processed_prefix: str = "processed.data",
    quarantine_prefix: str = "quarantine.data",
    compression: str = "zstd",
    rows_per_file: int = 4_000_000,
    date: str | None = None,
    since: str | None = None,
    full: bool = False,
    days: Iterable[dt.date] | None = None,
) -> dict[str, int]:
    """Builds ``processed.data/`` from ``raw.data/`` on ``spark``; returns the counters.

    ``days`` narrows the work further (the Glue job passes the days its bookmark found new).
    URIs are Hadoop URIs (``file:///…``, ``s3a://…`` locally, ``s3://…`` on Glue).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    configure(spark)
    src, dst = _FS(spark, input_uri), _FS(spark, output_uri)
    want_date = dt.date.fromisoformat(date) if date else None
    want_since = dt.date.fromisoformat(since) if since else None
    only = set(days) if days is not None else None

    by_day: dict[dt.date, list[tuple[str, int]]] = {}
    for key, size in src.list(raw_prefix):
        if not key.endswith((".jsonl", ".jsonl.gz")):
            continue
        day = rules.day_of_path(key)
        if day is not None:
            by_day.setdefault(day, []).append((key, size))

    counts: dict[str, int] = {"days": 0, "days_skipped": 0, "objects": 0, "bytes_in": 0}
    todo: dict[dt.date, list[tuple[str, int]]] = {}
    for day in sorted(by_day):
        if (
            (want_date and day != want_date)
            or (want_since and day < want_since)
            or (only is not None and day not in only)
        ):
            continue
        inputs = sorted(by_day[day])
        old = dst.read(f"{processed_prefix}/_manifest/{day.isoformat()}.json")
        if not full and old is not None:
            try:
                m = json.loads(old)
                same = [(i["key"], i["size"]) for i in m["inputs"]] == inputs
                if same and m.get("rules_version") == rules.VERSION:
                    counts["days_skipped"] += 1
                    continue
            except (ValueError, KeyError, TypeError):
                pass
        todo[day] = inputs
    if not todo:
        return {**counts, "lines": 0, "rows": 0, "quarantined": 0, "duplicates": 0, "files": 0, "bytes_out": 0}

    paths = {src.uri(k): (k, day.isoformat()) for day, objs in todo.items() for k, _ in objs}
    counts["objects"] = len(paths)
    counts["bytes_in"] = sum(s for objs in todo.values() for _, s in objs)
    files = spark.read.format("binaryFile").load(list(paths))
    lookup = spark.sparkContext.broadcast(dict(paths.values()))
    marker = f"/{raw_prefix}/"

    def parse_partition(rows: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        from urllib.parse import unquote

        table = lookup.value
        for row in rows:
            path = unquote(row.path)
            key = path[path.rfind(marker) + 1 :]
            yield from _parse_object(key, table[key], bytes(row.content))

    parsed = spark.createDataFrame(files.rdd.mapPartitions(parse_partition), _schema()).persist()
    part_cols = list(rules.PARTITION_COLUMNS)
    clean = parsed.filter(F.col("reason").isNull())
    quarantined = parsed.filter(F.col("reason").isNotNull())
    first = Window.partitionBy(*part_cols, *rules.DEDUPE_KEY).orderBy(*_HIDDEN)
    deduped = clean.withColumn("_n", F.row_number().over(first)).filter(F.col("_n") == 1).drop("_n")

    for day in todo:
        # The manifest goes first: a run stopped part-way leaves the day without one, so the next
        # run rebuilds it (with --full the old manifest would still match the inputs).
        dst.delete(f"{processed_prefix}/_manifest/{day.isoformat()}.json")
        dst.delete(f"{processed_prefix}/{_day_path(day)}")
        dst.delete(f"{quarantine_prefix}/{_day_path(day)}")
    names = [c for c, _ in rules.COLUMNS]
    (
        deduped.repartition(*part_cols)
        .sortWithinPartitions(*part_cols, *rules.SORT_KEY)
        .select(*names, *part_cols)
        .write.mode("append")
        .partitionBy(*part_cols)
        .option("compression", "none" if compression == "none" else compression)
        .option("maxRecordsPerFile", rows_per_file)
        .parquet(dst.uri(processed_prefix))
    )
    (
        quarantined.repartition(*part_cols)
        .sortWithinPartitions(*part_cols, *_HIDDEN)
        .select("reason", "raw", F.col("_obj").alias("object"), *part_cols)
        .write.mode("append")
        .partitionBy(*part_cols)
        .json(dst.uri(quarantine_prefix))
    )

    per_day: dict[str, dict[str, int]] = {}
    stats = parsed.groupBy(*part_cols).agg(
        F.count(F.lit(1)).alias("lines"),
        F.count("reason").alias("quarantined"),
    )
    for r in stats.collect():
        per_day[f"{r.year}-{r.month}-{r.day}"] = {"lines": r.lines, "quarantined": r.quarantined}
    for r in deduped.groupBy(*part_cols).count().collect():
        per_day.setdefault(f"{r.year}-{r.month}-{r.day}", {})["rows"] = r["count"]
    reasons = {r.reason: r["count"] for r in quarantined.groupBy("reason").count().collect()}
    parsed.unpersist()

    totals = {"lines": 0, "rows": 0, "quarantined": 0, "duplicates": 0, "files": 0, "bytes_out": 0}
    for day, inputs in todo.items():
        d = per_day.get(day.isoformat(), {})
        lines, q, rows = d.get("lines", 0), d.get("quarantined", 0), d.get("rows", 0)
        outputs = sorted(k for k, _ in dst.list(f"{processed_prefix}/{_day_path(day)}") if k.endswith(".parquet"))
        qfiles = sorted(k for k, _ in dst.list(f"{quarantine_prefix}/{_day_path(day)}") if k.endswith(".json"))
        out_sizes = dict(dst.list(f"{processed_prefix}/{_day_path(day)}"))
        manifest = {
            "rules_version": rules.VERSION,
            "engine": "spark",
            "day": day.isoformat(),
            "inputs": [{"key": k, "size": s} for k, s in inputs],
            "outputs": outputs,
            "quarantine": qfiles,
            "lines": lines,
            "rows": rows,
            "quarantined": q,
            "duplicates": lines - q - rows,
        }
        dst.write(f"{processed_prefix}/_manifest/{day.isoformat()}.json", json.dumps(manifest, indent=2).encode())
        counts["days"] += 1
        totals["lines"] += lines
        totals["rows"] += rows
        totals["quarantined"] += q
        totals["duplicates"] += lines - q - rows
        totals["files"] += len(outputs)
        totals["bytes_out"] += sum(out_sizes.get(k, 0) for k in outputs)
    return {**counts, **totals, **{f"quarantined_{r}": n for r, n in reasons.items()}}


def _args(argv: list[str]) -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="stockpipe_etl.py",
        description="raw JSONL → Parquet with stockpipe's shared rules (AWS Glue job; local Spark without awsglue)",
    )
    p.add_argument("--input", required=True, help="where raw.data/ lives (s3://bucket/prefix or file:///path)")
    p.add_argument("--output", required=True, help="where processed.data/ and quarantine.data/ go")
    p.add_argument("--raw_prefix", "--raw-prefix", default="raw.data")
    p.add_argument("--processed_prefix", "--processed-prefix", default="processed.data")
    p.add_argument("--quarantine_prefix", "--quarantine-prefix", default="quarantine.data")
    p.add_argument("--compression", default="zstd", choices=("zstd", "snappy", "none"))
    p.add_argument("--rows_per_file", "--rows-per-file", type=int, default=4_000_000)
    p.add_argument("--date", help="only this UTC day, YYYY-MM-DD")
    p.add_argument("--since", help="only this day and later ones")
    p.add_argument("--full", default="false", help="true: rebuild selected days even if unchanged")
    p.add_argument(
        "--source",
        default="s3",
        choices=("s3", "catalog"),
        help="catalog (Glue only): the job bookmark over the crawler's raw table picks the days with new files",
    )
    p.add_argument("--database", default="stock_db")
    p.add_argument("--raw_table", "--raw-table", default="raw_data")
    p.add_argument("--JOB_NAME", default="stockpipe-etl")
    args, _glue_own = p.parse_known_args(argv)  # Glue adds --JOB_ID, --TempDir, bookmarks, ...
    return args


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Entry point of the Glue job script: on Glue with ``GlueContext``, job bookmarks and
    ``job.commit()``; without ``awsglue`` on a local Spark session. Prints the counters as JSON."""
    import sys

    args = _args(sys.argv[1:] if argv is None else argv)
    options = {
        "input_uri": args.input,
        "output_uri": args.output,
        "raw_prefix": args.raw_prefix,
        "processed_prefix": args.processed_prefix,
        "quarantine_prefix": args.quarantine_prefix,
        "compression": args.compression,
        "rows_per_file": args.rows_per_file,
        "date": args.date,
        "since": args.since,
        "full": str(args.full).lower() in ("1", "true", "yes"),
    }
    try:
        from awsglue.context import GlueContext  # type: ignore[import-not-found]
        from awsglue.job import Job  # type: ignore[import-not-found]
    except ImportError:
        GlueContext = None  # local Spark

    if GlueContext is None:
        from stockpipe.config import load_config
        from stockpipe.spark_local import hadoop_uri, local_session

        uses_s3 = any(options[k].startswith(("s3://", "s3a://")) for k in ("input_uri", "output_uri"))
        cfg = load_config()
        spark = local_session(s3=cfg.s3 if uses_s3 else None, sse=cfg.transform.sse, cache_dir=cfg.dev.cache_dir)
        options["input_uri"], options["output_uri"] = hadoop_uri(args.input), hadoop_uri(args.output)
        try:
            counts = run(spark, **options)
        finally:
            spark.stop()
    else:
        from pyspark.context import SparkContext
        from pyspark.sql import functions as F

        glue = GlueContext(SparkContext.getOrCreate())
        spark = glue.spark_session
        job = Job(glue)
        job.init(args.JOB_NAME, vars(args))
        days = None
        if args.source == "catalog":
            # The bookmark (transformation_ctx) yields only files added since the last commit;
            # their days are rebuilt whole from S3, where the rules read each line's exact text.
            frame = glue.create_dynamic_frame.from_catalog(
                database=args.database, table_name=args.raw_table, transformation_ctx="raw_source"
            )
            df = frame.toDF()
            names = [r[0] for r in df.select(F.input_file_name()).distinct().collect()] if df.columns else []
            days = {d for d in (rules.day_of_path(n) for n in names) if d is not None}
        counts = run(spark, days=days, **options)
        job.commit()
    print(json.dumps(counts, sort_keys=True))
    return counts


if __name__ == "__main__":
    main()
