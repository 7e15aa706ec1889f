"""The URIs the pipeline names its storage with: a lake (``s3://bucket/prefix`` or ``file:///path``)
and a warehouse (``duckdb:///file`` or ``redshift://…``). Pure string rules, shared by the
configuration checks and by the commands that take a URI of their own."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

__all__ = ["LAKE_URI_EXPECTED", "is_lake_uri", "local_lake_problem", "warehouse_uri_problem", "zones_overlap"]

LAKE_URI_EXPECTED = "expected s3://bucket/prefix or file:///path"


def warehouse_uri_problem(uri: str) -> str | None:
    """What is wrong with a ``[warehouse] warehouse`` URI, or None when it names a warehouse."""
    if uri.startswith("duckdb://"):
        return None if uri[len("duckdb://") :] else "expected duckdb:///path/file.duckdb"
    if uri.startswith("redshift://"):
        u = urlsplit(uri)
        if not (u.hostname and u.path.strip("/")):
            return "expected redshift://WORKGROUP/DATABASE or redshift://USER:PASSWORD@HOST:PORT/DATABASE"
        if u.username is None and not re.fullmatch(r"[a-z0-9-]{3,64}", u.hostname):
            return (
                f"workgroup {u.hostname!r}: a Redshift Serverless workgroup name is 3-64 lowercase letters, digits or -"
            )
        return None
    return "expected duckdb:///path or redshift://WORKGROUP/DATABASE"


def is_lake_uri(uri: str) -> bool:
    """Whether ``uri`` names object storage the sink and the transform open: ``s3://`` with a bucket,
    or ``file://`` with a path (the same rule as the Rust store's)."""
    if uri.startswith("s3://"):
        return uri[len("s3://") :].partition("/")[0] != ""
    return uri.startswith("file://") and uri != "file://"


def local_lake_problem(uri: str) -> str | None:
    """What is wrong with the directory a ``file://`` lake to read names (a mistyped path), else None.

    A lake that exists but holds nothing yet is not a mistake: the commands that read it say so
    and exit 0. S3 has the same check in the store, which fails on a missing bucket."""
    if not uri.startswith("file://"):
        return None
    root = uri[len("file://") :]
    if os.path.isdir(root):
        return None
    return f"{root} is not a directory" if os.path.exists(root) else f"no such directory {root}"


def _zone(lake: str, prefix: str) -> str:
    """Where a zone of a lake lives: ``file://`` paths resolved (links included), ``scheme://bucket/key``
    otherwise (object keys are literal, so their prefixes are compared as written)."""
    import os

    if lake.startswith("file://"):
        return "file://" + os.path.realpath(os.path.join(lake[len("file://") :], prefix.strip("/")))
    return lake.rstrip("/") + "/" + prefix.strip("/")


def zones_overlap(input: str, output: str, raw: str, processed: str, quarantine: str) -> str | None:
    """Why the transform's zones cannot be told apart, or None. Raw data is read from ``input/raw``;
    Parquet goes to ``output/processed`` and refused rows to ``output/quarantine``, where stale files are
    removed: a zone equal to another, or inside it, would have the transform delete what it reads."""
    prefixes = {"raw_prefix": raw, "processed_prefix": processed, "quarantine_prefix": quarantine}
    for name, prefix in prefixes.items():
        inner = prefix.strip("/")
        if inner and any(part in ("", ".", "..") for part in inner.split("/")):
            return f"{name} = {prefix!r}: a prefix is a path of names, without '.', '..' or empty parts"
    zones = {
        "raw_prefix": _zone(input, raw),
        "processed_prefix": _zone(output, processed),
        "quarantine_prefix": _zone(output, quarantine),
    }
    names = list(zones)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            za, zb = zones[a].rstrip("/"), zones[b].rstrip("/")
            if za == zb or zb.startswith(za + "/") or za.startswith(zb + "/"):
                how = "is the same place as" if za == zb else "overlaps"
                return (
                    f"{a} ({zones[a]}) {how} {b} ({zones[b]}): raw, processed and quarantine data need places of "
                    "their own, or the transform would delete what it reads"
                )
    return None
