"""``stockpipe etl``: raw JSONL → Parquet under ``processed.data/year=YYYY/month=MM/day=DD/``.

Two engines apply the same rules (:mod:`stockpipe.rules`): ``rust`` (the default, in-process)
and ``spark`` (the Glue job's code, :mod:`stockpipe.spark_etl`, on local Spark or AWS Glue).
Both rebuild a day whole from all of its raw objects, so a rerun replaces files rather than
adding to them, and both keep a manifest per day under ``processed.data/_manifest/`` so only
days whose raw objects changed are rebuilt (``--full`` rebuilds the selected days anyway).

Example:
    >>> import stockpipe
    >>> stats = stockpipe.transform("file:///tmp/lake", "file:///tmp/lake")  # doctest: +SKIP
    >>> stats.rows, stats.quarantined  # doctest: +SKIP
    (99731, 269)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from stockpipe import rules
from stockpipe.config import Config, load_config
from stockpipe.exceptions import ConfigError
from stockpipe.uris import LAKE_URI_EXPECTED, is_lake_uri, local_lake_problem, zones_overlap

__all__ = ["TransformStats", "format_spark_status", "format_status", "main", "transform"]

RUST_TRANSFORM_KEYS = (
    "input",
    "output",
    "raw_prefix",
    "processed_prefix",
    "quarantine_prefix",
    "compression",
    "rows_per_file",
    "sse",
)


@dataclass(frozen=True, kw_only=True)
class TransformStats:
    """What one transform run did."""

    engine: str
    days: int
    days_skipped: int
    objects: int
    bytes_in: int
    lines: int
    rows: int
    quarantined: int
    duplicates: int
    files: int
    bytes_out: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    @classmethod
    def from_counts(cls, engine: str, raw: Mapping[str, float]) -> TransformStats:
        def n(key: str) -> int:
            return int(raw.get(key, 0))

        reasons = {k.removeprefix("quarantined_"): int(v) for k, v in raw.items() if k.startswith("quarantined_")}
        return cls(
            engine=engine,
            days=n("days"),
            days_skipped=n("days_skipped"),
            objects=n("objects"),
            bytes_in=n("bytes_in"),
            lines=n("lines"),
            rows=n("rows"),
            quarantined=n("quarantined"),
            duplicates=n("duplicates"),
            files=n("files"),
            bytes_out=n("bytes_out"),
            quarantined_by_reason={r: reasons[r] for r in rules.REASONS if reasons.get(r)},
            interrupted=bool(raw.get("interrupted", False)),
        )

    def summary(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in self.quarantined_by_reason.items())
        return (
            f"days built {self.days} (unchanged {self.days_skipped}), raw objects {self.objects}, "
            f"lines {self.lines}, rows {self.rows}, quarantined {self.quarantined}"
            + (f" ({reasons})" if reasons else "")
            + f", duplicates dropped {self.duplicates}, files {self.files}"
        )


def format_spark_status(now: Mapping[str, float], prev: Mapping[str, float], dt_s: float) -> str:
    """The status line of ``--engine spark``: Spark's own progress (it counts no rows until the end)."""
    stage = f"{now.get('stage', -1):4.0f}" if now.get("stage", -1) >= 0 else "   -"
    return (
        f"spark | jobs done {now.get('jobs_done', 0):3.0f} | stage {stage} | "
        f"tasks {now.get('tasks_done', 0):5.0f}/{now.get('tasks', 0):<5.0f} "
        f"(running {now.get('tasks_running', 0):.0f}) | {now.get('elapsed_s', 0):5.0f} s"
    )


def format_status(now: Mapping[str, float], prev: Mapping[str, float], dt_s: float) -> str:
    rate = (now.get("lines", 0) - prev.get("lines", 0)) / dt_s
    return (
        f"days {now.get('days', 0):4.0f} | objects {now.get('objects', 0):7.0f} | "
        f"MB in {now.get('bytes_in', 0) / 1e6:8.1f} | rows {now.get('rows', 0):10.0f} | "
        f"quarantined {now.get('quarantined', 0):7.0f} | lines/s {rate:9.0f}"
    )


def _check_day(flag: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: expected a date as YYYY-MM-DD") from None
    return value


def check_days(date: str | None, since: str | None) -> tuple[str | None, str | None]:
    """The ``date`` / ``since`` selection of ``etl`` and ``load``: dates, and at most one of them."""
    if date is not None and since is not None:
        raise ConfigError(f"--date {date} and --since {since}: give one of them")
    return _check_day("--date", date), _check_day("--since", since)


def transform(
    input: str | None = None,
    output: str | None = None,
    *,
    engine: str | None = None,
    date: str | None = None,
    since: str | None = None,
    full: bool = False,
    config: Config | None = None,
    status: Callable[[Mapping[str, float]], None] | None = None,
) -> TransformStats:
    """Builds ``processed.data/`` from ``raw.data/`` and returns the counts.

    Args:
        input: where ``raw.data/`` lives (``s3://bucket/prefix`` or ``file:///path``);
            default ``[transform] input``.
        output: where ``processed.data/`` and ``quarantine.data/`` go; default ``[transform] output``.
        engine: ``rust`` (default) or ``spark``.
        date: only this UTC day (``YYYY-MM-DD``).
        since: only this day and later ones.
        full: rebuild the selected days even when their raw objects did not change.
        config: settings to start from (default: :func:`stockpipe.load_config`).
        status: called about once a second with the counters (Rust engine) or Spark's progress (Spark).

    Raises:
        ConfigError: a bad setting, or a ``file://`` input that is not an existing directory (an
            existing, empty one returns zero counts).
    """
    cfg = config if config is not None else load_config()
    tc = dataclasses.replace(
        cfg.transform,
        input=input if input is not None else cfg.transform.input,
        output=output if output is not None else cfg.transform.output,
        engine=engine if engine is not None else cfg.transform.engine,
    )
    for key in ("input", "output"):
        if not is_lake_uri(getattr(tc, key)):
            raise ConfigError(f"[transform] {key} = {getattr(tc, key)!r}: {LAKE_URI_EXPECTED}")
    overlap = zones_overlap(tc.input, tc.output, tc.raw_prefix, tc.processed_prefix, tc.quarantine_prefix)
    if overlap is not None:
        raise ConfigError(f"[transform] {overlap}")
    date, since = check_days(date, since)
    if tc.engine not in ("rust", "spark"):
        raise ConfigError(f"[transform] engine = {tc.engine!r}: expected rust or spark")
    problem = local_lake_problem(tc.input)
    if problem is not None:
        raise ConfigError(f"[transform] input = {tc.input!r}: {problem}")
    if tc.engine == "spark":
        from stockpipe import spark_local

        counts = spark_local.run_local(
            tc, cfg.s3, date=date, since=since, full=full, cache_dir=cfg.dev.cache_dir, status=status
        )
        return TransformStats.from_counts("spark", counts)

    import json

    from stockpipe import _native

    data = dataclasses.asdict(tc)
    raw = _native.run_transform(
        json.dumps({k: data[k] for k in RUST_TRANSFORM_KEYS}),
        cfg.section_json("s3"),
        rules.spec_json(),
        date=date,
        since=since,
        full=full,
        status=status,
    )
    return TransformStats.from_counts("rust", raw)


def main(argv: list[str] | None = None) -> int:
    """``python -m stockpipe.etl``, the same as ``stockpipe etl``."""
    from stockpipe.cli import main as cli_main

    return cli_main(["etl", *(sys.argv[1:] if argv is None else argv)], prog="python -m stockpipe.etl")


if __name__ == "__main__":
    sys.exit(main())
