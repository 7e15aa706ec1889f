"""The local Finnhub-compatible server (``stockpipe simulate``), from Python.

Example:
    >>> from stockpipe.settings import SimulatorSettings
    >>> from stockpipe.simulator import run_simulator
    >>> run_simulator(SimulatorSettings(port=0, duration_s=1.0))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from stockpipe.settings import SimulatorSettings

if TYPE_CHECKING:
    from stockpipe._native import StopHandle

__all__ = ["run_simulator"]


def run_simulator(
    settings: SimulatorSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
    status: Callable[[Mapping[str, float]], None] | None = None,
    stop: StopHandle | None = None,
) -> dict[str, float]:
    """Serves until its duration elapses, ``stop.stop()`` is called (from any thread) or Ctrl-C;
    returns its counters."""
    from stockpipe import _native
    from stockpipe._runs import running

    handle = stop if stop is not None else _native.StopHandle()
    payload = json.dumps(dataclasses.asdict(settings))
    with running(handle):
        raw = _native.run_simulator(payload, on_ready=on_ready, status=status, stop=handle)
    stats: dict[str, float] = dict(raw)
    return stats
