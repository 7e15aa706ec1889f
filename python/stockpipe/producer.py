"""``python -m stockpipe.producer``: Finnhub WebSocket (or the simulator) → Kafka.

Example:
    >>> from stockpipe import Producer, load_config
    >>> cfg = load_config(env={}, use_default_file=False)
    >>> cfg.finnhub.ws_url = "ws://127.0.0.1:8765"
    >>> stats = Producer(cfg).run(max_messages=1000)  # doctest: +SKIP
    >>> stats.acked  # doctest: +SKIP
    1000
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stockpipe._runs import Stoppable
from stockpipe._status import rate
from stockpipe.config import Config

__all__ = ["Producer", "ProducerStats", "main"]


@dataclass(frozen=True, kw_only=True)
class ProducerStats:
    """What one producer run did."""

    frames: int
    trades: int
    acked: int
    failed: int
    dead_letters: int
    duplicates: int
    rejected: int
    reconnects: int
    pings: int
    unacked: int
    unqueued: int
    """Trades that arrived after a stop was requested while Kafka took no records, not queued."""
    interrupted: bool
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    active_s: float | None = None
    """Seconds from the first frame received to the last acknowledgement (the busy window)."""
    mode: str = "ws"
    """``ws`` (trades from the WebSocket) or ``quotes`` (REST snapshots: ``trades`` counts quotes)."""
    quote_requests: int = 0
    unchanged: int = 0
    """Quotes not published because nothing changed since the symbol's last one."""
    unknown_symbols: int = 0
    http_errors: int = 0
    connections: int = 0
    """WebSocket connections that opened (``ws`` mode); 0 when the feed was never reached."""

    @classmethod
    def from_native(cls, raw: Mapping[str, float], *, mode: str = "ws") -> ProducerStats:
        def n(key: str) -> int:
            return int(raw.get(key, 0))

        return cls(
            mode=mode,
            quote_requests=n("quote_requests"),
            unchanged=n("unchanged"),
            unknown_symbols=n("unknown_symbols"),
            http_errors=n("http_errors"),
            connections=n("connections"),
            frames=n("frames"),
            trades=n("trades"),
            acked=n("acked"),
            failed=n("failed"),
            dead_letters=n("dlq"),
            duplicates=n("duplicates"),
            rejected=n("rejected"),
            reconnects=n("reconnects"),
            pings=n("pings"),
            unacked=n("unacked"),
            unqueued=n("unqueued_at_stop"),
            interrupted=bool(raw.get("interrupted", False)),
            latency_p50_ms=raw.get("latency_p50_ms"),
            latency_p99_ms=raw.get("latency_p99_ms"),
            active_s=(raw["last_ack_unix_us"] - raw["first_frame_unix_us"]) / 1e6
            if raw.get("last_ack_unix_us") and raw.get("first_frame_unix_us")
            else None,
        )

    def summary(self) -> str:
        p99 = f"{self.latency_p99_ms:.1f} ms" if self.latency_p99_ms is not None else "n/a"
        if self.mode == "quotes":
            return (
                f"quotes {self.trades}, acked {self.acked}, failed {self.failed}, unacked {self.unacked}, "
                + (f"not queued at stop {self.unqueued}, " if self.unqueued else "")
                + f"requests {self.quote_requests}, unchanged {self.unchanged}, "
                f"unknown symbols {self.unknown_symbols}, HTTP errors {self.http_errors}, p99 response→ack {p99}"
            )
        return (
            f"trades {self.trades}, acked {self.acked}, failed {self.failed}, unacked {self.unacked}, "
            + (f"not queued at stop {self.unqueued}, " if self.unqueued else "")
            + f"dead letters {self.dead_letters}, duplicates dropped {self.duplicates}, "
            f"reconnects {self.reconnects}, p99 frame→ack {p99}"
        )


def interval_p99(now: Mapping[str, float]) -> str:
    """The p99 latency of the acknowledgements since the previous status line, ``-`` when none came."""
    p99 = now.get("latency_p99_interval_ms")
    return f"{p99:6.1f} ms" if p99 is not None else f"{'-':>6} ms"


def format_status(now: Mapping[str, float], prev: Mapping[str, float], dt: float) -> str:
    return (
        f"frames/s {rate(now, prev, 'frames', dt):8.0f} | trades/s {rate(now, prev, 'trades', dt):9.0f} | "
        f"acked {now.get('acked', 0):10.0f} | DLQ {now.get('dlq', 0):6.0f} | "
        f"reconnects {now.get('reconnects', 0):3.0f} | p99 {interval_p99(now)}"
    )


def format_quotes_status(now: Mapping[str, float], prev: Mapping[str, float], dt: float) -> str:
    return (
        f"requests/s {rate(now, prev, 'quote_requests', dt):6.1f} | quotes {now.get('trades', 0):8.0f} | "
        f"acked {now.get('acked', 0):8.0f} | unchanged {now.get('unchanged', 0):6.0f} | "
        f"unknown symbols {now.get('unknown_symbols', 0):3.0f} | HTTP errors {now.get('http_errors', 0):4.0f} | "
        f"p99 {interval_p99(now)}"
    )


class Producer(Stoppable):
    """Streams trades into Kafka with the Rust ingest client.

    Args:
        config: the effective configuration (``[finnhub]``, ``[kafka]``, ``[producer]``);
            by default :func:`~stockpipe.load_config`'s (``config.ini``, the environment).

    Example (in the background, e.g. from a notebook):
        >>> producer = Producer()  # doctest: +SKIP
        >>> worker = threading.Thread(target=producer.run)  # doctest: +SKIP
        >>> worker.start(); ...; producer.stop(); worker.join()  # doctest: +SKIP
    """

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)

    def run(
        self,
        *,
        duration: float | None = None,
        max_messages: int | None = None,
        status: Callable[[Mapping[str, float]], None] | None = None,
    ) -> ProducerStats:
        """Runs until ``duration`` elapses, ``max_messages`` trades are published, :meth:`stop`, or Ctrl-C.

        Args:
            status: called every ``[producer] status_interval`` seconds with the run's counters so far
                (``latency_p99_ms`` over the whole run, ``latency_p99_interval_ms`` over the acknowledgements
                since the previous call, absent when none came).

        Returns:
            The counters of the run; ``acked`` trades are durable in Kafka.
        """
        from stockpipe import _native

        cfg = self.config
        limit = max_messages if max_messages is not None else cfg.producer.max_messages
        seconds = duration if duration is not None else cfg.producer.duration
        every = max(cfg.producer.status_interval, 0.1)
        with self._run() as stop:

            def call(run: Callable[..., Mapping[str, float]], **cap: int | None) -> Mapping[str, float]:
                finnhub, kafka = cfg.section_json("finnhub"), json_kafka(cfg)
                return run(
                    finnhub,
                    kafka,
                    duration_s=seconds,
                    status=status,
                    status_every_s=every,
                    stop=stop,
                    metrics_address=cfg.producer.metrics_address,
                    **cap,
                )

            if cfg.producer.mode == "quotes":
                # REST /quote snapshots into [kafka] quotes_topic; `trades` counts snapshots published.
                raw = call(_native.run_quotes, max_quotes=limit)
            else:
                raw = call(_native.run_producer, max_trades=limit)
        return ProducerStats.from_native(raw, mode=cfg.producer.mode)


def json_kafka(cfg: Config) -> str:
    """The ``[kafka]`` section as the native core expects it."""
    import json

    return json.dumps(dataclasses.asdict(cfg.kafka))


def main(argv: list[str] | None = None) -> int:
    from stockpipe.cli import main as cli_main

    return cli_main(argv, prog="python -m stockpipe.producer", command="produce")


if __name__ == "__main__":
    sys.exit(main())
