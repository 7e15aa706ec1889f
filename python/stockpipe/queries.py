"""The SQL in ``sql/``, written once in the Redshift dialect: the statements of a load and the
analytics queries, and their translation to DuckDB by sqlglot."""

from __future__ import annotations

from pathlib import Path

from stockpipe.exceptions import ConfigError

__all__ = ["ANALYTICS", "SQL_DIR", "analytics_sql", "kind", "load_statements", "transpile"]

SQL_DIR = Path(__file__).with_name("sql")
_BARS = {"ohlcv_minute": "minute", "ohlcv_hour": "hour", "ohlcv_day": "day"}
"""One bar query (``sql/analytics/ohlcv.sql``) at three bucket sizes."""
ANALYTICS = tuple(sorted({p.stem for p in (SQL_DIR / "analytics").glob("*.sql")} - {"ohlcv"} | set(_BARS)))
"""Names ``stockpipe query`` accepts: the files in ``sql/analytics/`` and the three bar sizes."""


def _statements(text: str) -> list[str]:
    """Splits a SQL file into statements (no trailing semicolon), dropping ``--`` comments (the
    files in ``sql/`` keep ``--`` and ``;`` out of string literals)."""
    body = "\n".join(line.split("--", 1)[0].rstrip() for line in text.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]


def load_statements(*, schema: str, manifest: str, iam_role: str) -> list[str]:
    """The Redshift statements of one load: create the table if missing, stage, COPY, count, MERGE."""
    create = (SQL_DIR / "redshift/schema.sql").read_text()
    load_sql = (SQL_DIR / "redshift/load.sql").read_text()
    values = {"schema": schema, "manifest": manifest, "iam_role": iam_role}
    return [*_statements(create.format(**values)), *_statements(load_sql.format(**values))]


def analytics_sql(name: str, dialect: str = "redshift") -> str:
    """The analytics query ``name`` (see :data:`ANALYTICS`) in ``dialect`` (``redshift`` or ``duckdb``)."""
    if name not in ANALYTICS:
        raise ConfigError(f"unknown query {name!r}: expected SQL or one of {', '.join(ANALYTICS)}")
    if name in _BARS:
        text = (SQL_DIR / "analytics/ohlcv.sql").read_text().replace("{unit}", _BARS[name])
    else:
        text = (SQL_DIR / "analytics" / f"{name}.sql").read_text()
    return text if dialect == "redshift" else transpile(text, dialect)


def transpile(sql: str, dialect: str) -> str:
    import sqlglot

    try:
        out = sqlglot.transpile(sql, read="redshift", write=dialect)
    except sqlglot.errors.ParseError as e:
        raise ConfigError(f"SQL does not parse as Redshift SQL: {str(e).splitlines()[0]}") from None
    if len(out) != 1:
        raise ConfigError("expected exactly one SQL statement")
    if not (out[0] or "").strip():
        raise ConfigError(f"no SQL statement in {sql!r}")
    return out[0]


def kind(statement: str) -> str:
    """The statement's first word, lower case: ``create``, ``copy``, ``select``, ``merge``, …."""
    return statement.split(None, 1)[0].lower()
