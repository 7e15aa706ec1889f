"""Running the simulator and the producer as real processes, and checking Kafka against the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

SYMBOLS20 = [
    "AAPL", "MSFT", "AMZN", "GOOGL", "META", "TSLA", "NVDA", "JPM", "V", "WMT",
    "BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "BINANCE:SHIBUSDT", "OANDA:EUR_USD", "OANDA:USD_JPY",
    "IC MARKETS:1", "NFLX", "AMD", "INTC", "DIS",
]  # fmt: skip


class Simulator:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockpipe", "simulate", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else os.environ.copy(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.address = line.split()[-1]
        self.url = f"ws://{self.address}"

    def stop(self, timeout: float = 30) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=timeout)
        return err

    def wait(self, timeout: float = 120) -> str:
        _, err = self.proc.communicate(timeout=timeout)
        return err


def producer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "stockpipe.producer", "--status-interval", "0", *args]


def read_ledger(path: Path) -> list[dict[str, Any]]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def by_symbol_from_ledger(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, str, int]]]:
    out: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for r in rows:
        out[r["symbol"]].append((r["price"], r["volume"], int(r["trade_ts"])))
    return out


def by_symbol_from_kafka(messages: list[Any]) -> dict[str, list[tuple[str, str, int]]]:
    """Per symbol, in offset order; price and volume kept as their exact JSON text."""
    ordered = sorted(messages, key=lambda m: (m.partition(), m.offset()))
    out: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for m in ordered:
        rec = json.loads(m.value(), parse_float=str, parse_int=str)
        assert m.key().decode() == rec["symbol"]
        out[rec["symbol"]].append((rec["price"], rec["volume"], int(rec["trade_ts"])))
    return out
