"""``python -m stockpipe.consumer``: Kafka ``stock-data`` → JSONL objects on S3 or disk.

Batches close at ``--batch-size`` records or ``--batch-seconds`` (100 / 10 s by default) per
partition, under ``raw.data/year=YYYY/month=MM/day=DD/`` by each trade's own UTC date. Every
record is written exactly once, across crashes, restarts and rebalances (see
``docs/sink-exactly-once.md``).

Example:
    >>> from stockpipe import Sink, load_config
    >>> cfg = load_config(env={}, use_default_file=False)
    >>> cfg.sink.output = "file:///tmp/stockpipe-demo"
    >>> stats = Sink(cfg).run(duration=30)  # doctest: +SKIP
    >>> stats.records_written  # doctest: +SKIP
    1200
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stockpipe._runs import Stoppable
from stockpipe._status import rate
from stockpipe.config import Config

__all__ = ["Sink", "SinkStats", "main"]

RUST_SINK_KEYS = (
    "output",
    "raw_prefix",
    "batch_size",
    "batch_seconds",
    "batch_bytes",
    "gzip",
    "sse",
    "sse_kms_key_id",
    "max_buffered_records",
)


@dataclass(frozen=True, kw_only=True)
class SinkStats:
    """What one sink run did."""

    records_in: int
    records_written: int
    objects: int
    bytes: int
    batches: int
    dead_letters: int
    storage_errors: int
    claims_adopted: int
    lag: int
    interrupted: bool
    unwritten: int = 0
    """Records held when the run ended because their writes kept failing; not committed, so the next
    run reads them again from Kafka."""

    @classmethod
    def from_native(cls, raw: Mapping[str, float]) -> SinkStats:
        def n(key: str) -> int:
            return int(raw.get(key, 0))

        return cls(
            records_in=n("records_in"),
            records_written=n("records_written"),
            objects=n("objects"),
            bytes=n("bytes"),
            batches=n("batches"),
            dead_letters=n("dlq"),
            storage_errors=n("s3_errors"),
            claims_adopted=n("claims_adopted"),
            lag=n("lag"),
            interrupted=bool(raw.get("interrupted", False)),
            unwritten=n("buffered"),
        )

    def summary(self) -> str:
        return (
            f"records in {self.records_in}, written {self.records_written}, "
            + (f"not written at stop {self.unwritten} (left in Kafka), " if self.unwritten else "")
            + f"objects {self.objects}, bytes {self.bytes}, dead letters {self.dead_letters}, "
            f"storage errors {self.storage_errors}, claims honoured {self.claims_adopted}, lag {self.lag}"
        )


def format_status(now: Mapping[str, float], prev: Mapping[str, float], dt: float) -> str:
    per_partition = sorted((int(k[5:]), v) for k, v in now.items() if k.startswith("lag_p") and k[5:].isdigit())
    lags = " ".join(f"p{p}={v:.0f}" for p, v in per_partition) or "-"
    return (
        f"records/s {rate(now, prev, 'records_in', dt):8.0f} | objects {now.get('objects', 0):7.0f} | "
        f"MB {now.get('bytes', 0) / 1e6:8.1f} | lag {now.get('lag', 0):8.0f} ({lags}) | "
        f"oldest buffered {now.get('oldest_buffered_ms', 0) / 1000:5.1f}s | "
        f"partitions {now.get('partitions', 0):2.0f} | "
        f"storage errors {now.get('s3_errors', 0):4.0f}"
    )


class Sink(Stoppable):
    """Writes the trade topic to object storage with the Rust sink.

    Args:
        config: the effective configuration (``[kafka]``, ``[sink]``, ``[s3]``);
            by default :func:`~stockpipe.load_config`'s (``config.ini``, the environment).

    Example (in the background, e.g. from a notebook):
        >>> sink = Sink()  # doctest: +SKIP
        >>> worker = threading.Thread(target=sink.run)  # doctest: +SKIP
        >>> worker.start(); ...; sink.stop(); worker.join()  # doctest: +SKIP
    """

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)

    def run(
        self,
        *,
        duration: float | None = None,
        status: Callable[[Mapping[str, float]], None] | None = None,
    ) -> SinkStats:
        """Runs until ``duration`` elapses, :meth:`stop`, or Ctrl-C / SIGTERM, then writes what it holds."""
        from stockpipe import _native

        cfg = self.config
        with self._run() as stop:
            raw = _native.run_sink(
                json.dumps(dataclasses.asdict(cfg.kafka)),
                cfg.section_json("sink", only=RUST_SINK_KEYS),
                cfg.section_json("s3"),
                duration_s=duration if duration is not None else cfg.sink.duration,
                status=status,
                status_every_s=max(cfg.sink.status_interval, 0.1),
                stop=stop,
                metrics_address=cfg.sink.metrics_address,
            )
        return SinkStats.from_native(raw)


def main(argv: list[str] | None = None) -> int:
    from stockpipe.cli import main as cli_main

    return cli_main(argv, prog="python -m stockpipe.consumer", command="sink")


if __name__ == "__main__":
    sys.exit(main())
