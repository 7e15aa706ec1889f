"""The Data Catalog: the database, the raw and processed tables with their day partitions, and
the crawler over ``raw.data/`` (``stockpipe glue setup``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from stockpipe import rules
from stockpipe.config import Config
from stockpipe.glue._calls import GlueError, Plan, _call, _client, _differs, _exists, _lake, _role, _uri

HIVE_TYPES = {
    "string": "string",
    "double": "double",
    "int32": "int",
    "int64": "bigint",
    "timestamp_ms_utc": "timestamp",
    f"decimal({rules.PRICE_PRECISION},{rules.PRICE_SCALE})": f"decimal({rules.PRICE_PRECISION},{rules.PRICE_SCALE})",
}

RAW_COLUMNS = [
    ("symbol", "string"),
    ("price", "double"),
    ("volume", "double"),
    ("trade_ts", "bigint"),
    ("conditions", "array<string>"),
    ("received_ts", "bigint"),
    ("source", "string"),
    ("schema_version", "int"),
    ("kafka_partition", "int"),
    ("kafka_offset", "bigint"),
]
"""The raw table reads the sink's JSON for exploration (exact prices live in processed data)."""


def processed_columns() -> list[dict[str, str]]:
    """The processed table's columns, from the rule set."""
    return [{"Name": n, "Type": HIVE_TYPES[t]} for n, t in rules.COLUMNS]


def _days(s3: Any, bucket: str, prefix: str, folder: str) -> list[tuple[str, str, str]]:
    """The ``year=/month=/day=`` partitions that hold at least one object under ``folder``."""
    base = f"{prefix}/{folder}/" if prefix else f"{folder}/"
    found: set[tuple[str, str, str]] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            day = rules.day_of_path(obj["Key"][len(base) :])
            if day is not None:
                found.add((f"{day.year:04}", f"{day.month:02}", f"{day.day:02}"))
    return sorted(found)


def _table_input(name: str, location: str, columns: list[dict[str, str]], kind: str) -> dict[str, Any]:
    if kind == "json":
        formats = {
            "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe",
                "Parameters": {"ignore.malformed.json": "true"},
            },
        }
    else:
        formats = {
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
        }
    return {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": kind, "EXTERNAL": "TRUE", "stockpipe.rules_version": str(rules.VERSION)},
        "PartitionKeys": [{"Name": c, "Type": "string"} for c in rules.PARTITION_COLUMNS],
        "StorageDescriptor": {"Columns": columns, "Location": location, **formats},
    }


def _same_table(have: dict[str, Any], want: dict[str, Any]) -> bool:
    sd, wsd = have.get("StorageDescriptor", {}), want["StorageDescriptor"]
    return (
        [(c["Name"], c["Type"]) for c in sd.get("Columns", [])] == [(c["Name"], c["Type"]) for c in wsd["Columns"]]
        and sd.get("Location") == wsd["Location"]
        and sd.get("InputFormat") == wsd["InputFormat"]
        and [k["Name"] for k in have.get("PartitionKeys", [])] == list(rules.PARTITION_COLUMNS)
        and have.get("Parameters", {}).get("stockpipe.rules_version") == str(rules.VERSION)
    )


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def setup(cfg: Config) -> Plan:
    """Creates or updates the database, the raw and processed tables with their day partitions,
    and the crawler over ``raw.data/``."""
    bucket, prefix = _lake(cfg)
    role = _role(cfg)
    g = cfg.glue
    glue, s3 = _client(cfg, "glue"), _client(cfg, "s3")
    plan = Plan()

    if _exists(glue.get_database, Name=g.database) is None:
        _call(
            "create database",
            glue.create_database,
            DatabaseInput={"Name": g.database, "Description": "stockpipe: trades from Finnhub via Kafka"},
        )
        plan.add("database", g.database, "created")
    else:
        plan.add("database", g.database, "unchanged")

    tables = [
        (g.raw_table, cfg.transform.raw_prefix, [{"Name": n, "Type": t} for n, t in RAW_COLUMNS], "json"),
        (g.processed_table, cfg.transform.processed_prefix, processed_columns(), "parquet"),
    ]
    for name, folder, columns, kind in tables:
        want = _table_input(name, _uri(bucket, prefix, folder + "/"), columns, kind)
        have = _exists(glue.get_table, DatabaseName=g.database, Name=name)
        if have is None:
            _call(f"create table {name}", glue.create_table, DatabaseName=g.database, TableInput=want)
            plan.add("table", name, "created")
        elif not _same_table(have["Table"], want):
            _call(f"update table {name}", glue.update_table, DatabaseName=g.database, TableInput=want)
            plan.add("table", name, "updated")
        else:
            plan.add("table", name, "unchanged")

        existing: set[tuple[str, ...]] = set()
        for page in glue.get_paginator("get_partitions").paginate(DatabaseName=g.database, TableName=name):
            existing.update(tuple(p["Values"]) for p in page["Partitions"])
        missing = [d for d in _days(s3, bucket, prefix, folder) if d not in existing]
        sd = want["StorageDescriptor"]
        for chunk in _chunks(missing, 100):
            inputs = [
                {
                    "Values": list(d),
                    "StorageDescriptor": {
                        **sd,
                        "Location": _uri(bucket, prefix, f"{folder}/year={d[0]}/month={d[1]}/day={d[2]}/"),
                    },
                }
                for d in chunk
            ]
            out = _call(
                f"add partitions to {name}",
                glue.batch_create_partition,
                DatabaseName=g.database,
                TableName=name,
                PartitionInputList=inputs,
            )
            errors = [e for e in out.get("Errors", []) if e["ErrorDetail"]["ErrorCode"] != "AlreadyExistsException"]
            if errors:
                raise GlueError(f"add partitions to {name}: {errors[0]['ErrorDetail']}")
        for d in missing:
            plan.add("partition", f"{name}/{'/'.join(d)}", "created")

    crawler = {
        "Name": g.crawler,
        "Role": role,
        "DatabaseName": g.database,
        "Description": "stockpipe: adds new day partitions of raw.data/ (schema comes from the explicit table)",
        "Targets": {
            "S3Targets": [
                {"Path": _uri(bucket, prefix, cfg.transform.raw_prefix + "/"), "Exclusions": ["**/_*", "**/_*/**"]}
            ]
        },
        "SchemaChangePolicy": {"UpdateBehavior": "LOG", "DeleteBehavior": "LOG"},
        "Configuration": json.dumps(
            {"Version": 1.0, "CrawlerOutput": {"Partitions": {"AddOrUpdateBehavior": "InheritFromTable"}}},
            sort_keys=True,
        ),
    }
    have_c = _exists(glue.get_crawler, Name=g.crawler)
    if have_c is None:
        _call("create crawler", glue.create_crawler, **crawler)
        plan.add("crawler", g.crawler, "created")
    elif _differs(have_c["Crawler"], crawler, ("Role", "DatabaseName", "Targets", "SchemaChangePolicy")):
        _call("update crawler", glue.update_crawler, **crawler)
        plan.add("crawler", g.crawler, "updated")
    else:
        plan.add("crawler", g.crawler, "unchanged")
    return plan
