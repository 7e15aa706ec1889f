"""A process of the fault suite, watched: its output lines kept with the time each arrived, and what
they tell (a notice of the fault; progress of a status-line counter)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from typing import Any

__all__ = ["NOTICE", "STATUS", "Proc", "first_notice", "progress_after"]

STATUS = re.compile(r"frames/s|records/s")
NOTICE = re.compile(
    r"WARNING|ERROR|reconnect|rebalanc|assign|revok|retr(y|ies)|pause|disconnect|timed out|refused|"
    r"down|not leader|SlowDown|503|unavailable",
    re.IGNORECASE,
)


class Proc:
    """A pipeline process whose output lines are kept with the time they arrived."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.popen.stdout, self.popen.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.lines)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.popen.wait(10)
        for reader in self._readers:
            reader.join(5)
        return code

    def stop(self, timeout: float = 60) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        """kill -9, then reaps it."""
        self.signal(signal.SIGKILL)
        return self.wait(10)

    def counter(self, key: str) -> list[tuple[float, float]]:
        """``(time, value)`` of ``key N`` in each status line."""
        pattern = re.compile(rf"{key}\s+([0-9.]+)")
        out = []
        for at, line in self.snapshot():
            m = pattern.search(line) if STATUS.search(line) or key == "acked" else None
            if m:
                out.append((at, float(m.group(1))))
        return out

    def tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.snapshot()[-n:])


def first_notice(procs: list[Proc], after: float, until: float) -> float | None:
    """Seconds from ``after`` until a process logged something about the fault (None: nothing
    logged it before ``until``; the clients retried silently)."""
    noticed = [
        at
        for p in procs
        for at, line in p.snapshot()
        if after <= at <= until and not STATUS.search(line) and NOTICE.search(line)
    ]
    return min(noticed) - after if noticed else None


def progress_after(procs: list[Proc], key: str, after: float) -> float | None:
    """When any of ``procs`` first reported ``key`` above its value at ``after``."""
    best = None
    for p in procs:
        before = 0.0
        for at, value in p.counter(key):
            if at <= after:
                before = value
            elif value > before:
                best = at if best is None else min(best, at)
                break
    return best
