"""The stack's processes: spawn them, wait until they serve, tell whether they still run, stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockpipe.exceptions import DevStackError


def alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and is still the process we started (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    return marker in cmdline


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Starts ``cmd`` in a session of its own, its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Waits for ``check``; fails with the log's last lines when the process exits or time runs out."""
    # The Popen handle, not /proc, tells whether a child we just forked has exited: right after
    # fork its command line is still ours.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            raise DevStackError(
                f"{what} exited during startup (code {proc.returncode}); last lines of {log}:\n{tail(log)}"
            )
        time.sleep(0.25)
    raise DevStackError(f"{what} did not become healthy within {timeout:.0f}s; last lines of {log}:\n{tail(log)}")


def stop_process(proc: dict[str, Any], grace: float = 15.0) -> bool:
    """Stops one recorded process: SIGTERM, then SIGKILL after ``grace`` seconds."""
    pid, marker = int(proc["pid"]), str(proc["marker"])
    if not alive(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid, marker):
        time.sleep(0.1)
    if alive(pid, marker):
        os.kill(pid, signal.SIGKILL)
        while alive(pid, marker):
            time.sleep(0.05)
    return True
