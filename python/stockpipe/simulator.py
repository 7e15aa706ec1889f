"""The local Finnhub-compatible server (``stockpipe simulate``), from Python.

Example:
    >>> from stockpipe.config import SimulatorSettings
    >>> from stockpipe.simulator import run_simulator
    >>> run_simulator(SimulatorSettings(port=0, duration_s=1.0))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping

from stockpipe.config import SimulatorSettings

__all__ = ["run_simulator"]


def run_simulator(
    settings: SimulatorSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
    status: Callable[[Mapping[str, float]], None] | None = None,
) -> dict[str, float]:
    """Serves until its duration elapses or Ctrl-C; returns its counters."""
    from stockpipe import _native

    payload = dataclasses.asdict(settings)
    stats: dict[str, float] = dict(_native.run_simulator(json.dumps(payload), on_ready=on_ready, status=status))
    return stats
