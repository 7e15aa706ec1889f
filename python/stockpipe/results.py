"""What a load and a query return: :class:`LoadStats` and :class:`Result` (printed as a table, CSV or
JSON lines, shown as a table in a notebook)."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import html
import io
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["LoadStats", "Result"]


@dataclass(frozen=True, kw_only=True)
class LoadStats:
    """What one load did."""

    warehouse: str
    files: int
    rows_in: int
    inserted: int
    updated: int
    total_rows: int

    @classmethod
    def of_merge(cls, warehouse: str, files: int, rows_in: int, merged: int, matched: int, total: int) -> LoadStats:
        """A load counted by its MERGE: ``merged`` rows written, ``matched`` of them already loaded."""
        return cls(
            warehouse=warehouse,
            files=files,
            rows_in=rows_in,
            inserted=merged - matched,
            updated=matched,
            total_rows=total,
        )

    def summary(self) -> str:
        return (
            f"files {self.files}, rows read {self.rows_in}, inserted {self.inserted}, updated {self.updated}, "
            f"rows in stock_prices {self.total_rows}"
        )


@dataclass(frozen=True)
class Result:
    """A query's column names and rows; a notebook shows it as a table, ``to_pandas()`` makes a DataFrame."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def to_pandas(self) -> Any:
        import pandas as pd  # type: ignore[import-untyped]

        return pd.DataFrame.from_records(self.rows, columns=self.columns)

    def __len__(self) -> int:
        return len(self.rows)

    def _numeric(self) -> list[bool]:
        # Numbers are right-aligned, so their digits line up; everything else reads from the left.
        return [
            any(v is not None for v in col) and all(v is None or _is_number(v) for v in col)
            for col in zip(*self.rows, strict=True)
        ] or [False] * len(self.columns)

    def _repr_html_(self, max_rows: int = 50) -> str:
        """A notebook shows a result as a table (the first ``max_rows`` rows), numbers right-aligned."""
        numeric = self._numeric()

        def cell(tag: str, value: str, right: bool) -> str:
            style = ' style="text-align:right"' if right else ""
            return f"<{tag}{style}>{html.escape(value)}</{tag}>"

        head = "".join(cell("th", c, num) for c, num in zip(self.columns, numeric, strict=True))
        body = "".join(
            "<tr>" + "".join(cell("td", _text(v), num) for v, num in zip(r, numeric, strict=True)) + "</tr>"
            for r in self.rows[:max_rows]
        )
        more = len(self.rows) - max_rows
        note = f"<p>… {more} more rows ({len(self.rows)} in all)</p>" if more > 0 else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"

    def format(self, kind: str = "table") -> str:
        if kind == "json":
            return "\n".join(json.dumps(dict(zip(self.columns, map(_plain, r), strict=True))) for r in self.rows)
        if kind == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(self.columns)
            w.writerows([[_text(v) for v in r] for r in self.rows])
            return buf.getvalue().rstrip("\n")
        cells = [self.columns, *[[_text(v) for v in r] for r in self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        numeric = self._numeric()
        lines = [
            " | ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)
            ).rstrip()
            for row in cells
        ]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)


def _plain(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return f"{v:f}"
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    return v


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, float):
        return f"{v:.10g}"
    if isinstance(v, decimal.Decimal):
        return f"{v:f}"
    return str(v)
