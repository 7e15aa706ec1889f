"""The Glue job's code on a local Spark (``stockpipe etl --engine spark``, and the job script run
without ``awsglue``): a session set up for the rules (S3A from Maven Central for ``s3://``), Spark's
progress as status lines, Ctrl-C as cancelled jobs, and the JVM's failures as one-line errors.

Only the standard library and ``pyspark`` are imported, like :mod:`stockpipe.spark_etl`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stockpipe.spark_etl import HADOOP_CONF, SPARK_CONF, run

__all__ = ["hadoop_aws_package", "hadoop_uri", "local_session", "run_local"]


@functools.cache
def hadoop_aws_package() -> str:
    """The Maven coordinates of Hadoop's S3A connector matching the Hadoop inside ``pyspark``.

    PySpark's wheel carries Hadoop's client but not ``hadoop-aws``; Spark fetches it (and the AWS SDK
    it needs) from Maven Central into its Ivy cache the first time a session asks for it.
    """
    import re

    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    versions = [
        m.group(1)
        for j in jars.glob("hadoop-client-api-*.jar")
        if (m := re.match(r"hadoop-client-api-(.+)\.jar$", j.name))
    ]
    return f"org.apache.hadoop:hadoop-aws:{versions[0] if versions else '3.3.4'}"


def local_session(
    app: str = "stockpipe-etl",
    *,
    s3: Any = None,
    master: str = "local[2]",
    sse: str = "none",
    cache_dir: str | None = None,
) -> Any:
    """A local Spark session set up for the rules.

    With ``s3`` settings it also reads and writes ``s3a://``: Hadoop's S3A connector is added from
    Maven Central (cached under ``cache_dir``/ivy), pointed at ``s3``'s endpoint, region and keys, and
    objects it writes are encrypted server-side when ``sse`` is ``AES256``.
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Local files without Hadoop's .crc side files, which other readers would list.
        .config("spark.hadoop.fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
        .config("spark.hadoop.fs.file.impl.disable.cache", "true")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", os.environ.get("STOCKPIPE_SPARK_DRIVER_MEMORY", "2g"))
    )
    for k, v in {**SPARK_CONF, **{f"spark.hadoop.{k}": v for k, v in HADOOP_CONF.items()}}.items():
        builder = builder.config(k, v)
    if s3 is not None:
        builder = builder.config("spark.jars.packages", hadoop_aws_package())
        if cache_dir:
            builder = builder.config("spark.jars.ivy", os.path.join(os.path.expanduser(cache_dir), "ivy"))
        builder = builder.config("spark.hadoop.fs.s3a.endpoint.region", s3.region)
        # A server that does not answer fails the run in seconds, as the Rust engine does, rather than
        # after S3A's default of 7 rounds of 20 SDK attempts (throttling keeps its own, longer, limit).
        builder = builder.config("spark.hadoop.fs.s3a.attempts.maximum", "3")
        builder = builder.config("spark.hadoop.fs.s3a.retry.limit", "3")
        # Upload blocks in memory: S3A's disk buffers need Hadoop's checksummed local file system,
        # which this session replaces with the raw one (no .crc side files).
        builder = builder.config("spark.hadoop.fs.s3a.fast.upload.buffer", "bytebuffer")
        if sse.upper() == "AES256":
            builder = builder.config("spark.hadoop.fs.s3a.server-side-encryption-algorithm", "AES256")
        if s3.endpoint_url:
            builder = builder.config("spark.hadoop.fs.s3a.endpoint", s3.endpoint_url)
        builder = builder.config("spark.hadoop.fs.s3a.path.style.access", str(bool(s3.force_path_style)).lower())
        if s3.access_key_id:
            builder = builder.config("spark.hadoop.fs.s3a.access.key", s3.access_key_id)
        if s3.secret_access_key:
            builder = builder.config("spark.hadoop.fs.s3a.secret.key", s3.secret_access_key)
        if s3.session_token:
            builder = builder.config("spark.hadoop.fs.s3a.session.token", s3.session_token)
            provider = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
            builder = builder.config("spark.hadoop.fs.s3a.aws.credentials.provider", provider)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("STOCKPIPE_SPARK_LOG_LEVEL", "ERROR"))
    return spark


def hadoop_uri(uri: str) -> str:
    """A lake URI as Hadoop on a local Spark reads it: ``s3://`` → ``s3a://`` (Glue's own ``s3://`` is
    EMRFS), and a relative ``file://`` path, such as the embedded default ``file://./stockpipe-data/…``,
    made absolute (Hadoop would take ``.`` for a host)."""
    import os

    if uri.startswith("s3://"):
        return "s3a://" + uri[len("s3://") :]
    if uri.startswith("file://") and not uri.startswith("file:///"):
        return "file://" + os.path.abspath(uri[len("file://") :])
    return uri


def run_local(
    tc: Any,
    s3: Any,
    *,
    date: str | None = None,
    since: str | None = None,
    full: bool = False,
    cache_dir: str | None = None,
    status: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, int]:
    """Runs :func:`run` on a local Spark session with ``[transform]`` settings ``tc``; ``status`` is
    called about once a second with Spark's progress (see :func:`_progress`).

    Spark's own failures (a bucket it may not read, a server that does not answer) are raised as
    :class:`~stockpipe.exceptions.TransformError` with the JVM's one-line reason.
    """
    from stockpipe.exceptions import ConfigError, TransformError

    try:
        import pyspark  # noqa: F401
        from py4j.protocol import Py4JError, Py4JJavaError  # type: ignore[import-untyped]
        from pyspark.errors.exceptions.captured import CapturedException
    except ImportError:
        raise ConfigError("--engine spark needs pyspark: pip install 'pyspark==3.5.4'") from None
    uses_s3 = tc.input.startswith("s3://") or tc.output.startswith("s3://")
    log = _spark_log(cache_dir)
    if uses_s3 and not _ivy_has(cache_dir, hadoop_aws_package()):
        import logging

        logging.getLogger(__name__).warning(
            "fetching %s and the AWS SDK it needs from Maven Central (once, about 280 MB)", hadoop_aws_package()
        )
    try:
        with _output_to(log):  # the JVM's start-up chatter (Ivy's report, warnings) goes to its log
            spark = local_session(s3=s3 if uses_s3 else None, sse=tc.sse, cache_dir=cache_dir)
    except RuntimeError as exc:  # the JVM did not start (PySparkRuntimeError)
        need = f" with {hadoop_aws_package()} from Maven Central (for s3://)" if uses_s3 else ""
        why = _last_error_line(log) or _first_line(exc)
        raise TransformError(f"local Spark could not start{need}: {why} (its log: {log})") from None
    try:
        with _cancel_on_interrupt(spark) as interrupted, _progress(spark, status):
            try:
                return run(
                    spark,
                    input_uri=hadoop_uri(tc.input),
                    output_uri=hadoop_uri(tc.output),
                    raw_prefix=tc.raw_prefix,
                    processed_prefix=tc.processed_prefix,
                    quarantine_prefix=tc.quarantine_prefix,
                    compression=tc.compression,
                    rows_per_file=tc.rows_per_file,
                    date=date,
                    since=since,
                    full=full,
                )
            except (Py4JError, CapturedException) as exc:
                if interrupted.is_set():  # Spark's jobs were cancelled: the days not done keep no manifest
                    raise KeyboardInterrupt from None
                if isinstance(exc, Py4JJavaError):
                    raise TransformError(f"spark: {_java_reason(exc.java_exception.toString())}") from None
                if isinstance(exc, CapturedException):  # a JVM exception PySpark converts to its own class
                    raise TransformError(f"spark: {type(exc).__name__}: {_first_line(exc.desc)}") from None
                raise
    finally:
        spark.stop()


@contextlib.contextmanager
def _progress(spark: Any, status: Callable[[dict[str, float]], None] | None, interval: float = 1.0) -> Iterator[None]:
    """While the block runs, calls ``status`` every ``interval`` seconds with Spark's progress: jobs
    done, the newest running stage, its running stages' tasks (done, running, in all), seconds since
    the start."""
    import threading
    import time

    if status is None:
        yield
        return
    stop = threading.Event()
    started = time.monotonic()

    def poll() -> None:
        tracker = spark.sparkContext.statusTracker()
        while not stop.wait(interval):
            try:
                jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup()]
                stages = [s for s in map(tracker.getStageInfo, tracker.getActiveStageIds()) if s is not None]
            except Exception:  # noqa: BLE001 (the session is stopping)
                return
            status(
                {
                    "jobs_done": float(sum(1 for j in jobs if j is not None and j.status == "SUCCEEDED")),
                    "stage": float(max((s.stageId for s in stages), default=-1)),
                    "tasks_done": float(sum(s.numCompletedTasks for s in stages)),
                    "tasks_running": float(sum(s.numActiveTasks for s in stages)),
                    "tasks": float(sum(s.numTasks for s in stages)),
                    "elapsed_s": time.monotonic() - started,
                }
            )

    thread = threading.Thread(target=poll, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


@contextlib.contextmanager
def _cancel_on_interrupt(spark: Any) -> Iterator[Any]:
    """While the block runs on the main thread, a first SIGINT or SIGTERM cancels Spark's jobs (the
    block then ends with KeyboardInterrupt) and a second one stops at once. Yields the event set by the
    first."""
    import signal
    import sys
    import threading

    interrupted = threading.Event()
    done = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def cancel() -> None:  # every job, including one started after the first cancel
        while not done.is_set():
            try:
                spark.sparkContext.cancelAllJobs()
            except Exception:  # noqa: BLE001 (the session may be stopping)
                return
            done.wait(0.5)

    def handler(_signum: int, _frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print(
            "interrupted: cancelling Spark's jobs (interrupt again to stop without waiting)",
            file=sys.stderr,
            flush=True,
        )
        threading.Thread(target=cancel, name="spark-cancel", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupted
    finally:
        done.set()
        for sig, h in previous.items():
            signal.signal(sig, h)


def _ivy_has(cache_dir: str | None, package: str) -> bool:
    """Whether Spark's Ivy cache under ``cache_dir`` already holds ``group:artifact:version``."""
    import os

    if not cache_dir:
        return False
    group, artifact, version = package.split(":")
    return (Path(os.path.expanduser(cache_dir)) / "ivy" / "jars" / f"{group}_{artifact}-{version}.jar").is_file()


def _spark_log(cache_dir: str | None) -> Path:
    import os
    import tempfile

    base = Path(os.path.expanduser(cache_dir)) if cache_dir else Path(tempfile.gettempdir()) / "stockpipe"
    return base / "logs" / "spark-etl.log"


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Points file descriptors 1 and 2 at ``path`` (truncated) while the block runs: a child started
    in it, such as Spark's JVM, keeps writing there; this process's own are restored after it."""
    import os
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in enumerate(saved, start=1):
            os.dup2(copy, fd)
            os.close(copy)


def _last_error_line(log: Path) -> str | None:
    """The last line of a JVM log that names an error (Ivy's unresolved dependency, an exception)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    marks = ("unresolved dependency", "Exception", "Error", "error")
    hits = [line.strip(" :\t") for line in lines if any(m in line for m in marks) and not line.startswith("\tat ")]
    return hits[-1] if hits else None


def _java_reason(text: str) -> str:
    """A JVM exception as one short line: its class without the package, its message without the
    AWS SDK's request details; S3A finding no credentials, in the words the other commands use."""
    import re

    if "NoAuthWithAWSException" in text:  # S3A's credential chain had nothing
        from stockpipe.aws import NO_AWS_CREDENTIALS

        return NO_AWS_CREDENTIALS
    line = _first_line(text).split(" (Service: ", 1)[0]
    return re.sub(r"^(?:[a-z0-9_]+\.)+(?=[A-Z])", "", line)


def _first_line(exc: object) -> str:
    """The first non-empty line of an error, the one that names it."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
