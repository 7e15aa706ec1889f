"""The stack's S3 server: MinIO built with ``go install``, SSE-S3 on with a generated KMS key."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockpipe.config import Config
from stockpipe.dev import procs, tools
from stockpipe.dev.layout import Layout
from stockpipe.exceptions import DevStackError

Say = Callable[[str], None]
ACCESS_KEY = "stockpipe-dev"


def start(cfg: Config, layout: Layout, say: Say, processes: list[dict[str, Any]]) -> None:
    """Starts the S3 server on ``[dev] s3_port`` and waits until it reports live."""
    dev = cfg.dev
    kept = layout.secrets()
    binary = tools.minio_binary(Path(dev.cache_dir), say)
    layout.s3_data.mkdir(parents=True, exist_ok=True)
    log = layout.logs / "s3.log"
    env = dict(
        os.environ,
        MINIO_ROOT_USER=ACCESS_KEY,
        MINIO_ROOT_PASSWORD=kept["secret"],
        MINIO_KMS_SECRET_KEY=f"stockpipe-dev:{kept['kms_key']}",
        MINIO_BROWSER="off",
        MINIO_UPDATE="off",
        MINIO_CI_CD="1",
    )
    cmd = [
        str(binary),
        "server",
        str(layout.s3_data),
        "--address",
        f"127.0.0.1:{dev.s3_port}",
        "--console-address",
        f"127.0.0.1:{dev.s3_port + 1}",
        "--quiet",
    ]
    proc = procs.spawn(cmd, log, env)
    marker = str(layout.s3_data)
    processes.append({"name": "s3", "pid": proc.pid, "marker": marker, "log": str(log), "port": dev.s3_port})

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{dev.s3_port}/minio/health/live", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    procs.wait_until(healthy, 60, "the S3 server (MinIO)", proc, log)


def create_bucket(endpoint: str, secret: str, region: str, bucket: str) -> None:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret, region_name=region
    )
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise DevStackError(f"cannot create bucket {bucket}: {exc}") from None
