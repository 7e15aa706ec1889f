"""A live one-line status for long-running commands, and the final summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

Formatter = Callable[[Mapping[str, float], Mapping[str, float], float], str]

WAITING_FOR_KAFKA = "waiting for Kafka: the brokers have not answered yet, or the topics are being checked"
"""The status line of a stage whose counters have ``kafka_ready`` at 0 (a producer or a sink before
the brokers answered), instead of a row of zero rates."""


class StatusLine:
    """Prints a status line each report: redrawn in place on a terminal, one line per report otherwise.

    Example:
        >>> s = StatusLine(lambda now, prev, dt: f"{now['n']:.0f}", stream=sys.stdout, enabled=True)
        >>> s({"n": 3.0})  # doctest: +SKIP
    """

    def __init__(self, fmt: Formatter | None = None, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._fmt = fmt
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._prev: dict[str, float] = {}
        self._at = time.monotonic()
        self._tty = self._stream.isatty()
        self._drawn = False

    def __call__(self, stats: Mapping[str, float]) -> None:
        now = time.monotonic()
        dt = max(now - self._at, 1e-9)
        if not stats.get("kafka_ready", 1):
            line = WAITING_FOR_KAFKA
        else:
            line = self._fmt(stats, self._prev, dt) if self._fmt else ""
        self._prev, self._at = dict(stats), now
        self.show(line)

    def show(self, line: str) -> None:
        """Prints a line made elsewhere, as a report would be."""
        if not self._enabled:
            return
        if self._tty:
            self._stream.write("\r\x1b[2K" + line)
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def rate(now: Mapping[str, float], prev: Mapping[str, float], key: str, dt: float) -> float:
    return (now.get(key, 0.0) - prev.get(key, 0.0)) / dt
