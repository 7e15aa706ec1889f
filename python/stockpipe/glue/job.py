"""The transform job: its script and package uploaded, the job created or updated
(``stockpipe glue deploy``), a run started and followed (``stockpipe glue run``)."""

from __future__ import annotations

import io
import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from stockpipe import __version__
from stockpipe.config import Config
from stockpipe.glue._calls import GlueError, Plan, _call, _client, _differs, _exists, _lake, _role, _uri

log = logging.getLogger("stockpipe")


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
