"""Type stubs of the private native module. Users import from ``stockpipe``, never from here."""

from collections.abc import Callable, Mapping
from typing import Any, final

__all__ = [
    "DISCONNECT_KINDS",
    "StopHandle",
    "__version__",
    "cluster_brokers",
    "ensure_topics",
    "parse_frame",
    "run_producer",
    "run_quotes",
    "run_simulator",
    "run_sink",
    "run_transform",
    "runtime_pid",
    "transform_rules",
    "validate_finnhub",
]

__version__: str
DISCONNECT_KINDS: tuple[str, ...]

@final
class StopHandle:
    def __new__(cls) -> StopHandle: ...
    def stop(self) -> None: ...
    @property
    def stopped(self) -> bool: ...

def run_producer(
    finnhub_json: str,
    kafka_json: str,
    *,
    max_trades: int | None = None,
    duration_s: float | None = None,
    status: Callable[[Mapping[str, float]], None] | None = None,
    status_every_s: float = 1.0,
    flush_timeout_s: float = 4.0,
    stop: StopHandle | None = None,
    metrics_address: str | None = None,
) -> dict[str, Any]: ...
def run_quotes(
    finnhub_json: str,
    kafka_json: str,
    *,
    max_quotes: int | None = None,
    duration_s: float | None = None,
    status: Callable[[Mapping[str, float]], None] | None = None,
    status_every_s: float = 1.0,
    stop: StopHandle | None = None,
    metrics_address: str | None = None,
) -> dict[str, Any]: ...
def run_simulator(
    sim_json: str,
    *,
    on_ready: Callable[[str], Any] | None = None,
    status: Callable[[Mapping[str, float]], None] | None = None,
    status_every_s: float = 1.0,
    stop: StopHandle | None = None,
) -> dict[str, float]: ...
def ensure_topics(kafka_json: str, topics: list[tuple[str, int]], timeout_s: float = 15.0) -> list[dict[str, Any]]: ...
def cluster_brokers(kafka_json: str, timeout_s: float = 10.0) -> list[tuple[int, str, int]]: ...
def validate_finnhub(finnhub_json: str) -> None: ...
def parse_frame(text: str) -> tuple[str, list[str], list[str]]: ...
def run_sink(
    kafka_json: str,
    sink_json: str,
    s3_json: str,
    *,
    duration_s: float | None = None,
    status: Callable[[Mapping[str, float]], None] | None = None,
    status_every_s: float = 1.0,
    stop: StopHandle | None = None,
    metrics_address: str | None = None,
) -> dict[str, Any]: ...
def run_transform(
    transform_json: str,
    s3_json: str,
    rules_json: str,
    *,
    date: str | None = None,
    since: str | None = None,
    full: bool = False,
    status: Callable[[Mapping[str, float]], None] | None = None,
    status_every_s: float = 1.0,
) -> dict[str, Any]: ...
def transform_rules() -> str: ...
def runtime_pid() -> int: ...
