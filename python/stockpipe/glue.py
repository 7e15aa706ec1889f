"""AWS Glue from Python: the Data Catalog, the crawler and the transform job (``stockpipe glue``).

* :func:`setup` creates the database, explicit tables for ``raw.data/`` (JSON) and
  ``processed.data/`` (Parquet, the schema of :mod:`stockpipe.rules`) with a partition per day
  found in S3, and a crawler over ``raw.data/`` that only adds partitions (it inherits the
  explicit schema instead of guessing one).
* :func:`deploy` uploads the job script and the ``stockpipe`` package (pure Python, zipped for
  ``--extra-py-files``) and creates or updates the job, with job bookmarks on.
* :func:`run` starts the job and follows its state until it ends.

Every call is idempotent: what exists and matches is left alone, what differs is updated.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockpipe import __version__, rules
from stockpipe.aws import aws_credentials, aws_error, s3_client
from stockpipe.config import Config
from stockpipe.exceptions import ConfigError, StockpipeError

log = logging.getLogger("stockpipe")

__all__ = ["GlueError", "Plan", "deploy", "processed_columns", "run", "setup"]

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


class GlueError(StockpipeError):
    """A Glue call failed or a job run did not succeed."""


def processed_columns() -> list[dict[str, str]]:
    """The processed table's columns, from the rule set."""
    return [{"Name": n, "Type": HIVE_TYPES[t]} for n, t in rules.COLUMNS]


@dataclass
class Plan:
    """What a call did, resource by resource (``created``, ``updated`` or ``unchanged``)."""

    actions: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, kind: str, name: str, what: str) -> None:
        self.actions.append((kind, name, what))

    def lines(self) -> list[str]:
        return [f"{what:9} {kind} {name}" for kind, name, what in self.actions]


def _lake(cfg: Config) -> tuple[str, str]:
    lake = cfg.glue.lake or cfg.transform.output
    if not lake.startswith("s3://"):
        raise ConfigError(
            f"[glue] lake = {lake!r}: Glue reads S3; set --lake s3://bucket/prefix (or [transform] output)"
        )
    bucket, _, prefix = lake[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def _uri(bucket: str, prefix: str, key: str) -> str:
    return f"s3://{bucket}/{prefix + '/' if prefix else ''}{key}"


def _client(cfg: Config, service: str) -> Any:
    if service == "s3":
        return s3_client(cfg)
    import boto3

    return boto3.client(
        "glue",
        region_name=cfg.glue.region,
        endpoint_url=cfg.glue.endpoint_url or None,
        **aws_credentials(cfg),
    )


def _call(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as e:
        err = e.response.get("Error", {})
        raise GlueError(f"{what}: {err.get('Code', 'error')}: {err.get('Message', e)}") from None
    except BotoCoreError as e:
        raise GlueError(f"{what}: {aws_error(e)}") from None


def _exists(fn: Callable[..., Any], **kwargs: Any) -> Any | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "EntityNotFoundException":
            return None
        raise GlueError(f"{fn.__name__}: {e}") from None
    except BotoCoreError as e:  # no credentials, no endpoint, ...
        raise GlueError(f"{fn.__name__}: {aws_error(e)}") from None


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


def _role(cfg: Config) -> str:
    if not cfg.glue.role:
        raise ConfigError("[glue] role is not set: the IAM role ARN the crawler and job run as (--role arn:aws:iam::…)")
    return cfg.glue.role


def _differs(have: dict[str, Any], want: dict[str, Any], keys: tuple[str, ...]) -> bool:
    def norm(v: Any) -> Any:
        return json.loads(json.dumps(v, sort_keys=True, default=str))

    return any(norm(_prune(have.get(k))) != norm(_prune(want.get(k))) for k in keys)


def _prune(v: Any) -> Any:
    """Drops empty lists/dicts the service adds to what it returns, so a plain comparison works."""
    if isinstance(v, dict):
        return {k: _prune(x) for k, x in v.items() if x not in ([], {}, None)}
    if isinstance(v, list):
        return [_prune(x) for x in v]
    return v


def package_zip() -> bytes:
    """The ``stockpipe`` package as Glue's ``--extra-py-files`` wants it: pure Python, no native
    extension and no local-stack tooling. Entries are sorted and dated 1980 so equal sources
    give equal bytes."""
    import stockpipe

    root = Path(stockpipe.__file__).parent
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root.parent)
            if rel.parts[1] in ("dev",) or "__pycache__" in rel.parts:
                continue
            info = zipfile.ZipInfo(str(rel).replace("\\", "/"), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
    return buf.getvalue()


def job_script() -> bytes:
    """The job script: ``glue/stockpipe_etl.py`` in a source tree, else the same entry point
    (:func:`stockpipe.spark_etl.main`) from the installed package."""
    import stockpipe
    import stockpipe.spark_etl

    repo = Path(stockpipe.__file__).resolve().parents[2] / "glue" / "stockpipe_etl.py"
    if repo.is_file():
        return repo.read_bytes()
    return Path(stockpipe.spark_etl.__file__).read_bytes()


def deploy(cfg: Config) -> Plan:
    """Uploads the script and package to ``<lake>/_glue/`` and creates or updates the job."""
    bucket, prefix = _lake(cfg)
    role = _role(cfg)
    g = cfg.glue
    glue, s3 = _client(cfg, "glue"), _client(cfg, "s3")
    plan = Plan()
    base = f"{prefix}/_glue" if prefix else "_glue"
    uploads = {
        f"{base}/scripts/stockpipe_etl.py": job_script(),
        f"{base}/lib/stockpipe-{__version__}.zip": package_zip(),
    }
    for key, body in uploads.items():
        _call(
            f"upload s3://{bucket}/{key}",
            s3.put_object,
            Bucket=bucket,
            Key=key,
            Body=body,
            ServerSideEncryption="AES256",
        )
        plan.add("object", f"s3://{bucket}/{key}", "uploaded")
    lake = _uri(bucket, prefix, "").rstrip("/")
    t = cfg.transform
    job = {
        "Role": role,
        "Description": "stockpipe: raw JSONL → Parquet with the shared cleaning rules",
        "Command": {
            "Name": "glueetl",
            "ScriptLocation": f"s3://{bucket}/{base}/scripts/stockpipe_etl.py",
            "PythonVersion": "3",
        },
        "DefaultArguments": {
            "--extra-py-files": f"s3://{bucket}/{base}/lib/stockpipe-{__version__}.zip",
            "--job-bookmark-option": "job-bookmark-enable",
            "--job-language": "python",
            "--enable-glue-datacatalog": "true",
            "--input": lake,
            "--output": lake,
            "--raw_prefix": t.raw_prefix,
            "--processed_prefix": t.processed_prefix,
            "--quarantine_prefix": t.quarantine_prefix,
            "--compression": t.compression,
            "--rows_per_file": str(t.rows_per_file),
            "--source": g.source,
            "--database": g.database,
            "--raw_table": g.raw_table,
            # Glue writes the job's output with SSE-S3 too, as the sink and the Rust engine do.
            **({"--encryption-type": "sse-s3"} if t.sse.upper() == "AES256" else {}),
        },
        "GlueVersion": g.glue_version,
        "WorkerType": g.worker_type,
        "NumberOfWorkers": g.workers,
        "MaxRetries": 0,
        "Timeout": 120,
        "ExecutionProperty": {"MaxConcurrentRuns": 1},
    }
    have = _exists(glue.get_job, JobName=g.job_name)
    if have is None:
        _call("create job", glue.create_job, Name=g.job_name, **job)
        plan.add("job", g.job_name, "created")
    elif _differs(have["Job"], job, tuple(job)):
        _call("update job", glue.update_job, JobName=g.job_name, JobUpdate=job)
        plan.add("job", g.job_name, "updated")
    else:
        plan.add("job", g.job_name, "unchanged")
    return plan


TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED")


def run(
    cfg: Config,
    *,
    arguments: dict[str, str] | None = None,
    wait: bool = True,
    on_state: Callable[[str, float], None] | None = None,
) -> tuple[str, str]:
    """Starts the job; with ``wait``, follows it until it ends. Returns (run id, final state).
    A run that ends other than SUCCEEDED raises :class:`GlueError` with Glue's message."""
    g = cfg.glue
    glue = _client(cfg, "glue")
    if _exists(glue.get_job, JobName=g.job_name) is None:
        raise GlueError(f"job {g.job_name!r} does not exist: run `stockpipe glue deploy` first")
    started = _call("start job run", glue.start_job_run, JobName=g.job_name, Arguments=arguments or {})
    run_id = started["JobRunId"]
    state, t0 = "STARTING", time.monotonic()
    if on_state:
        on_state(state, 0.0)
    try:
        while wait:
            jr = _call("get job run", glue.get_job_run, JobName=g.job_name, RunId=run_id)["JobRun"]
            new = jr["JobRunState"]
            if new != state:
                state = new
                if on_state:
                    on_state(state, time.monotonic() - t0)
            if state in TERMINAL:
                if state != "SUCCEEDED":
                    raise GlueError(f"job run {run_id} ended {state}: {jr.get('ErrorMessage', 'no message')}")
                break
            time.sleep(g.poll_seconds)
    except KeyboardInterrupt:
        # Only the watching stops: the run is Glue's, and it may be wanted. Say how to stop it.
        log.warning(
            "interrupted: job run %s goes on in Glue; to stop it: aws glue batch-stop-job-run --job-name %s "
            "--job-run-ids %s",
            run_id,
            g.job_name,
            run_id,
        )
        raise
    return run_id, state
