"""AWS clients for the configured ``[s3]`` settings, and their errors in one line.

The Glue, Redshift and warehouse helpers build their boto3 clients here, so the endpoint, region,
keys and addressing style are read in one place.
"""

from __future__ import annotations

from typing import Any, TypedDict

from stockpipe.config import Config

__all__ = ["NO_AWS_CREDENTIALS", "AwsCredentials", "aws_credentials", "aws_error", "s3_client"]


class AwsCredentials(TypedDict):
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    aws_session_token: str | None


def aws_credentials(cfg: Config) -> AwsCredentials:
    """The configured key pair and session token, as boto3 clients take them (``None``: boto3's
    default chain)."""
    return AwsCredentials(
        aws_access_key_id=cfg.s3.access_key_id,
        aws_secret_access_key=cfg.s3.secret_access_key,
        aws_session_token=cfg.s3.session_token,
    )


def s3_client(cfg: Config) -> Any:
    """A boto3 S3 client for the ``[s3]`` settings (endpoint, region, keys, path-style)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        region_name=cfg.s3.region,
        endpoint_url=cfg.s3.endpoint_url or None,
        **aws_credentials(cfg),
        config=BotoConfig(s3={"addressing_style": "path" if cfg.s3.force_path_style else "auto"}),
    )


NO_AWS_CREDENTIALS = (
    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or [s3] access_key_id and "
    "secret_access_key), or AWS_PROFILE, or run where an IAM role applies"
)


def aws_error(e: Exception) -> str:
    """One line for a botocore error, naming the fix when it is the missing credentials."""
    from botocore.exceptions import NoCredentialsError

    return NO_AWS_CREDENTIALS if isinstance(e, NoCredentialsError) else str(e)
