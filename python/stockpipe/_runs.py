"""The runs in progress: each can be stopped from another thread, and all are stopped at exit.

A stage run on a background thread (a notebook, a service, the demo) is inside Rust until it
returns. If the interpreter finished while one was still there, the thread would be torn down in
the middle of the stage: nothing flushed or committed, and the process aborted. So every run is
registered here, and at exit each is asked to stop, as on Ctrl-C, and given time to flush.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from stockpipe.checks import validate
from stockpipe.config import Config, load_config

if TYPE_CHECKING:
    from stockpipe._native import StopHandle

log = logging.getLogger("stockpipe")

# The longest a stage takes to stop: the sink's drain of what it holds.
EXIT_GRACE_S = 35.0

_lock = threading.Lock()
_running: dict[int, tuple[StopHandle, threading.Event]] = {}


@contextmanager
def running(stop: StopHandle) -> Iterator[None]:
    """Registers one run (its stop handle) for as long as the block lasts."""
    done = threading.Event()
    with _lock:
        _running[id(done)] = (stop, done)
    try:
        yield
    finally:
        done.set()
        with _lock:
            _running.pop(id(done), None)


def stop_all(timeout: float = EXIT_GRACE_S) -> int:
    """Asks every run in progress to stop and waits up to ``timeout`` for them; returns how many there were."""
    with _lock:
        runs = list(_running.values())
    if runs:
        log.info("stopping %d run(s) still in progress before exit", len(runs))
    for stop, _ in runs:
        stop.stop()
    deadline = time.monotonic() + timeout
    for _, done in runs:
        # Waiting releases the GIL, which the stopping runs need to return.
        done.wait(max(0.0, deadline - time.monotonic()))
    return len(runs)


atexit.register(stop_all)


class Stoppable:
    """A stage whose runs can be stopped from any thread (the producer, the sink)."""

    def __init__(self, config: Config | None = None) -> None:
        from stockpipe import _native

        self.config = config if config is not None else load_config()
        self._stop = _native.StopHandle()

    def stop(self) -> None:
        """Asks the run in progress (or the next, if none is) to stop as on Ctrl-C: the producer flushes
        what Kafka has not acknowledged, the sink writes what it holds and commits, and ``run`` returns.
        Safe from any thread; returns at once."""
        self._stop.stop()

    @contextmanager
    def _run(self) -> Iterator[StopHandle]:
        """One run: its stop handle, registered for exit; the next run gets a fresh one.

        The configuration is checked again first: it may have been changed since it was loaded."""
        from stockpipe import _native

        validate(self.config)
        stop = self._stop
        try:
            with running(stop):
                yield stop
        finally:
            self._stop = _native.StopHandle()
