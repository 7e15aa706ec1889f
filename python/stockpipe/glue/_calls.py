"""What the catalog and the job share: calling Glue with one-line errors, and a plan of what a
call did."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stockpipe.aws import aws_credentials, aws_error, s3_client
from stockpipe.config import Config
from stockpipe.exceptions import ConfigError, StockpipeError


class GlueError(StockpipeError):
    """A Glue call failed or a job run did not succeed."""


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


def _role(cfg: Config) -> str:
    if not cfg.glue.role:
        raise ConfigError("[glue] role is not set: the IAM role ARN the crawler and job run as (--role arn:aws:iam::…)")
    return cfg.glue.role


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
