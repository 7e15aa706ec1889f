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
from stockpipe.exceptions import ConfigError
from stockpipe.spark_fs import HadoopFS, day_path
from stockpipe.uris import zones_overlap

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


_Objects = list[tuple[str, int]]
"""A day's raw objects: (key, size), sorted."""


def _selected_days(
    listing: list[tuple[str, int]],
    date: str | None,
    since: str | None,
    days: Iterable[dt.date] | None,
) -> dict[dt.date, _Objects]:
    """Step 1: the raw objects of the days asked for, by day."""
    want_date = dt.date.fromisoformat(date) if date else None
    want_since = dt.date.fromisoformat(since) if since else None
    only = set(days) if days is not None else None
    by_day: dict[dt.date, _Objects] = {}
    for key, size in listing:
        if not key.endswith((".jsonl", ".jsonl.gz")):
            continue
        day = rules.day_of_path(key)
        if day is None or (want_date and day != want_date) or (want_since and day < want_since):
            continue
        if only is None or day in only:
            by_day.setdefault(day, []).append((key, size))
    return {day: sorted(by_day[day]) for day in sorted(by_day)}


def _unchanged(manifest: bytes | None, inputs: _Objects) -> bool:
    """Step 2: whether a day's manifest was written by these rules from exactly these objects."""
    if manifest is None:
        return False
    try:
        m = json.loads(manifest)
        same = [(i["key"], i["size"]) for i in m["inputs"]] == inputs
        return bool(same and m.get("rules_version") == rules.VERSION)
    except (ValueError, KeyError, TypeError):
        return False


def _parse(spark: Any, src: HadoopFS, todo: dict[dt.date, _Objects], raw_prefix: str) -> Any:
    """Step 3: every non-blank line of the objects, cleaned or quarantined, one row each."""
    paths = {src.uri(k): (k, day.isoformat()) for day, objs in todo.items() for k, _ in objs}
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

    return spark.createDataFrame(files.rdd.mapPartitions(parse_partition), _schema())


def _first_of_each(clean: Any) -> Any:
    """Step 4: one row per (kafka_partition, kafka_offset), the first read (object key, line)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy(*rules.PARTITION_COLUMNS, *rules.DEDUPE_KEY).orderBy(*_HIDDEN)
    return clean.withColumn("_n", F.row_number().over(first)).filter(F.col("_n") == 1).drop("_n")


def _write_days(
    rows: Any,
    quarantined: Any,
    dst: HadoopFS,
    days: Iterable[dt.date],
    prefixes: tuple[str, str],
    compression: str,
    rows_per_file: int,
) -> None:
    """Step 5: each day's directories replaced by its sorted Parquet files and its quarantine."""
    from pyspark.sql import functions as F

    processed_prefix, quarantine_prefix = prefixes
    for day in days:
        # The manifest goes first: a run stopped part-way leaves the day without one, so the next
        # run rebuilds it (with --full the old manifest would still match the inputs).
        dst.delete(f"{processed_prefix}/_manifest/{day.isoformat()}.json")
        dst.delete(f"{processed_prefix}/{day_path(day)}")
        dst.delete(f"{quarantine_prefix}/{day_path(day)}")
    part_cols = list(rules.PARTITION_COLUMNS)
    (
        rows.repartition(*part_cols)
        .sortWithinPartitions(*part_cols, *rules.SORT_KEY)
        .select(*(c for c, _ in rules.COLUMNS), *part_cols)
        .write.mode("append")
        .partitionBy(*part_cols)
        .option("compression", compression)
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


def _day_counts(parsed: Any, rows: Any) -> dict[str, dict[str, int]]:
    """Lines, quarantined lines and rows written, by ISO day."""
    from pyspark.sql import functions as F

    part_cols = list(rules.PARTITION_COLUMNS)
    per_day: dict[str, dict[str, int]] = {}
    stats = parsed.groupBy(*part_cols).agg(
        F.count(F.lit(1)).alias("lines"),
        F.count("reason").alias("quarantined"),
    )
    for r in stats.collect():
        per_day[f"{r.year}-{r.month}-{r.day}"] = {"lines": r.lines, "quarantined": r.quarantined}
    for r in rows.groupBy(*part_cols).count().collect():
        per_day.setdefault(f"{r.year}-{r.month}-{r.day}", {})["rows"] = r["count"]
    return per_day


def _write_manifest(
    dst: HadoopFS, day: dt.date, inputs: _Objects, counts: dict[str, int], prefixes: tuple[str, str]
) -> dict[str, int]:
    """Step 5, last: the day's manifest (what it was built from and into); returns its totals."""
    processed_prefix, quarantine_prefix = prefixes
    lines, q, rows = counts.get("lines", 0), counts.get("quarantined", 0), counts.get("rows", 0)
    out_sizes = dict(dst.list(f"{processed_prefix}/{day_path(day)}"))
    outputs = sorted(k for k in out_sizes if k.endswith(".parquet"))
    qfiles = sorted(k for k, _ in dst.list(f"{quarantine_prefix}/{day_path(day)}") if k.endswith(".json"))
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
    return {
        "lines": lines,
        "rows": rows,
        "quarantined": q,
        "duplicates": lines - q - rows,
        "files": len(outputs),
        "bytes_out": sum(out_sizes[k] for k in outputs),
    }


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
    from pyspark.sql import functions as F

    overlap = zones_overlap(input_uri, output_uri, raw_prefix, processed_prefix, quarantine_prefix)
    if overlap is not None:
        raise ConfigError(overlap)
    configure(spark)
    src, dst = HadoopFS(spark, input_uri), HadoopFS(spark, output_uri)
    selected = _selected_days(src.list(raw_prefix), date, since, days)
    todo = {
        day: inputs
        for day, inputs in selected.items()
        if full or not _unchanged(dst.read(f"{processed_prefix}/_manifest/{day.isoformat()}.json"), inputs)
    }
    counts = {
        "days": len(todo),
        "days_skipped": len(selected) - len(todo),
        "objects": sum(len(objs) for objs in todo.values()),
        "bytes_in": sum(s for objs in todo.values() for _, s in objs),
    }
    totals = dict.fromkeys(("lines", "rows", "quarantined", "duplicates", "files", "bytes_out"), 0)
    if not todo:
        return {**counts, **totals}

    parsed = _parse(spark, src, todo, raw_prefix).persist()
    quarantined = parsed.filter(F.col("reason").isNotNull())
    rows = _first_of_each(parsed.filter(F.col("reason").isNull()))
    prefixes = (processed_prefix, quarantine_prefix)
    _write_days(rows, quarantined, dst, todo, prefixes, compression, rows_per_file)
    per_day = _day_counts(parsed, rows)
    reasons = {r.reason: r["count"] for r in quarantined.groupBy("reason").count().collect()}
    parsed.unpersist()

    for day, inputs in todo.items():
        for k, n in _write_manifest(dst, day, inputs, per_day.get(day.isoformat(), {}), prefixes).items():
            totals[k] += n
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
