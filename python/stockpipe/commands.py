"""What each ``stockpipe`` command does, once :mod:`stockpipe.cli` parsed its flags and loaded the
configuration: one ``cmd_*`` function per command, returning the exit status. Errors are raised as
:class:`~stockpipe.exceptions.StockpipeError`, which the command line prints in one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from stockpipe import __version__
from stockpipe._status import Formatter
from stockpipe.config import Config
from stockpipe.exceptions import ConfigError, IngestError


def cmd_config_show(args: argparse.Namespace, cfg: Config) -> int:
    data = cfg.redacted()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    # Loadable as config.ini: sources go on lines of their own, and secrets stay out of it.
    print("; The effective configuration. A value not at its default follows a line naming its source.")
    print()
    for section, values in data.items():
        print(f"[{section}]")
        for key, value in values.items():
            shown = ",".join(value) if isinstance(value, list) else value
            if isinstance(value, dict):
                shown = ",".join(f"{k}={v}" for k, v in value.items())
            source = cfg.sources[(section, key)]
            hidden = value != getattr(getattr(cfg, section), key)
            if source != "default":
                print(f"; from {source}" + (" (a secret: not shown)" if hidden else ""))
            print(f"{'; ' if hidden else ''}{key} = {'' if shown is None else shown}")
        print()
    return 0


def cmd_dev_up(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.dev import stack

    state = stack.up(cfg, say=lambda m: print(m, file=sys.stderr))
    print(f"Kafka bootstrap servers: {state['bootstrap_servers']}")
    security = state.get("kafka_security") or {}
    if security:
        user = f", SCRAM user {security['sasl_username']}" if security.get("sasl_username") else ""
        print(f"Kafka security:          {security['security_protocol']} (CA {security['ssl_ca_location']}{user})")
    print(f"S3 endpoint:             {state['s3_endpoint_url']} (bucket {state['bucket']}, SSE-S3 on)")
    for t in state.get("topics", []):
        print(f"topic {t['name']}: {t['partitions']} partitions, replication factor {t['replication_factor']}")
    print(f"state, data and logs:    {state['home']}")
    print('point other commands at it: eval "$(stockpipe dev env)"')
    return 0


def cmd_dev_down(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.dev import stack

    stack.down(cfg)
    return 0


def cmd_dev_status(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.dev import stack

    st = stack.status(cfg)
    if not st["processes"]:
        print("the dev stack is not running (start it with: stockpipe dev up)")
        return 3
    for p in st["processes"]:
        state = "running" if p["alive"] else "DEAD"
        print(f"{p['name']:<8} {state:<8} pid {p['pid']:<8} port {p['port']:<6} log {p['log']}")
    return 0 if st["running"] else 1


def cmd_dev_env(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.dev import stack
    from stockpipe.exceptions import DevStackError

    state = stack.read_state(cfg.dev)
    if state is None:
        raise DevStackError("the dev stack is not running; start it with: stockpipe dev up")
    print("\n".join(stack.env_lines(state)))
    return 0


def cmd_dev_chaos(args: argparse.Namespace, cfg: Config) -> int:
    import platform
    from datetime import datetime, timezone
    from pathlib import Path

    from stockpipe.dev import audit, chaos

    if args.list:
        for name, what in chaos.scenario_names():
            print(f"{name:<28} {what}")
        return 0
    dev = cfg.dev
    if cfg.sources.get(("dev", "home"), "default") == "default":
        dev.home = str(Path(dev.cache_dir) / "chaos")
    if cfg.sources.get(("dev", "kafka_port"), "default") == "default":
        dev.kafka_port = 24092
    if cfg.sources.get(("dev", "s3_port"), "default") == "default":
        dev.s3_port = 24000
    dev.brokers = 3
    started = time.monotonic()
    results = chaos.run(cfg, args.scenario, say=lambda m: print(m, file=sys.stderr, flush=True))
    table = audit.table(results)
    if args.json:
        print(json.dumps(audit.as_dicts(results), indent=2))
    else:
        print(table)
    if args.out:
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        notes = "".join(f"- {r.scenario}: {r.note}\n" for r in results if r.note)
        Path(args.out).write_text(
            f"# Fault suite results\n\nstockpipe {__version__}, {when}, {platform.machine()} "
            f"{os.cpu_count()} cores, Kafka {dev.kafka_version} (3 brokers, KRaft), "
            f"{time.monotonic() - started:.0f} s. Command: `stockpipe dev chaos`.\n\n{table}\n{notes}"
        )
    bad = [r.scenario for r in results if not r.ok]
    if bad:
        print(f"stockpipe: fault suite: {', '.join(bad)} did not behave as required", file=sys.stderr)
        return 1
    return 0


def cmd_simulate(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.simulator import run_simulator

    stats = run_simulator(cfg.simulate, on_ready=lambda addr: print(f"listening on {addr}", flush=True))
    print(
        f"simulator: sent {stats.get('trades_sent', 0):.0f} trades in {stats.get('frames_sent', 0):.0f} frames, "
        f"{stats.get('connections', 0):.0f} connections, {stats.get('disconnects', 0):.0f} injected disconnects",
        file=sys.stderr,
    )
    return 0


class _Summarised(Protocol):
    def summary(self) -> str: ...


S = TypeVar("S", bound=_Summarised)


def _streaming(stage: str, interval: float, fmt: Formatter, address: str | None, run: Callable[..., S]) -> S:
    """Runs a long-lived stage (``run(status=...)``) with its status line; says where its metrics
    are served, and prints its summary once it ends."""
    status = StatusLineFor(interval, fmt)
    if address:
        print(f"{stage}: Prometheus metrics at http://{address}/metrics while running", file=sys.stderr)
    try:
        stats = run(status=status.callback)
    finally:
        status.close()
    print(f"{stage}: {stats.summary()}", file=sys.stderr)
    return stats


def cmd_produce(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.producer import Producer, format_quotes_status, format_status

    _explain_missing_key(cfg)
    line = format_quotes_status if cfg.producer.mode == "quotes" else format_status
    p = cfg.producer
    stats = _streaming("producer", p.status_interval, line, p.metrics_address, Producer(cfg).run)
    if stats.mode == "ws" and stats.connections == 0 and not stats.interrupted:
        # A bounded run that never reached the feed did nothing: a scheduled job must see it fail.
        raise IngestError(
            f"no connection to {cfg.finnhub.ws_url} opened in {stats.reconnects + 1} attempts; "
            "each attempt's reason is logged above"
        )
    if stats.mode == "quotes" and stats.quote_requests > 0 and stats.http_errors == stats.quote_requests:
        raise IngestError(
            f"no quote request to {cfg.finnhub.rest_url} succeeded in {stats.quote_requests} attempts; "
            "each failure is logged above"
        )
    return 0 if stats.failed == 0 and stats.unacked == 0 and stats.unqueued == 0 else 1


def cmd_sink(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.consumer import Sink, format_status

    stats = _streaming("sink", cfg.sink.status_interval, format_status, cfg.sink.metrics_address, Sink(cfg).run)
    return 1 if stats.unwritten else 0


def cmd_topics(args: argparse.Namespace, cfg: Config) -> int:
    import dataclasses

    from stockpipe import _native

    k = cfg.kafka
    for t in _native.ensure_topics(json.dumps(dataclasses.asdict(k)), k.pipeline_topics(), 30.0):
        verb = "created" if t["created"] else "exists"
        print(f"{t['name']}: {verb}, {t['partitions']} partitions, replication factor {t['replication_factor']}")
    return 0


def cmd_etl(args: argparse.Namespace, cfg: Config) -> int:
    import dataclasses

    from stockpipe.etl import format_spark_status, format_status, transform

    status = StatusLineFor(1.0, format_spark_status if cfg.transform.engine == "spark" else format_status)
    try:
        stats = transform(
            config=cfg,
            date=args.date,
            since=args.since,
            full=args.full,
            status=status.callback,
        )
    finally:
        status.close()
    if stats.objects == 0 and stats.days_skipped == 0 and not stats.interrupted:
        where = f"{cfg.transform.input.rstrip('/')}/{cfg.transform.raw_prefix}/"
        print(
            f"etl: no raw JSONL under {where}{_for_days(args)} (--input should be the sink's --output)", file=sys.stderr
        )
    print(f"etl ({stats.engine}): {stats.summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps(dataclasses.asdict(stats)))
    return 130 if stats.interrupted else 0


def _for_days(args: argparse.Namespace) -> str:
    """ " for DAY" / " since DAY" when the command was limited to days."""
    if getattr(args, "date", None):
        return f" for {args.date}"
    if getattr(args, "since", None):
        return f" since {args.since}"
    return ""


def cmd_load(args: argparse.Namespace, cfg: Config) -> int:
    import dataclasses

    from stockpipe.warehouse import load

    status = StatusLineFor(1.0, None)
    try:
        stats = load(date=args.date, since=args.since, config=cfg, status=status.show)
    finally:
        status.close()
    if stats.files == 0:
        lake = cfg.warehouse.input or cfg.transform.output
        where = f"{lake.rstrip('/')}/{cfg.transform.processed_prefix}/"
        print(f"load: no Parquet files under {where}{_for_days(args)}: run stockpipe etl first", file=sys.stderr)
    print(f"load ({stats.warehouse}): {stats.summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps(dataclasses.asdict(stats)))
    return 0


def cmd_query(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.warehouse import query

    print(query(args.sql, config=cfg).format(cfg.warehouse.format))
    return 0


def cmd_glue_setup(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.glue import setup

    for line in setup(cfg).lines():
        print(line)
    return 0


def cmd_glue_deploy(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.glue import deploy

    for line in deploy(cfg).lines():
        print(line)
    return 0


def cmd_glue_run(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.glue import run

    def show(state: str, elapsed: float) -> None:
        print(f"{cfg.glue.job_name}: {state} after {elapsed:.0f}s", file=sys.stderr, flush=True)

    run_id, state = run(cfg, wait=not args.no_wait, on_state=show)
    print(json.dumps({"job": cfg.glue.job_name, "run_id": run_id, "state": state}))
    return 0


def _explain_missing_key(cfg: Config) -> None:
    endpoint = cfg.finnhub.rest_url if cfg.producer.mode == "quotes" else cfg.finnhub.ws_url
    if not cfg.finnhub.api_key and "finnhub.io" in endpoint:
        raise ConfigError(
            "no Finnhub API key: set FINNHUB_API_KEY (free at https://finnhub.io/register) or [finnhub] api_key, "
            "or run the local simulator (stockpipe simulate) and pass --ws-url ws://127.0.0.1:8765"
        )


class StatusLineFor:
    """A status line that is off when the interval is 0."""

    def __init__(self, interval: float, fmt: Any) -> None:
        from stockpipe._status import StatusLine

        self._line = StatusLine(fmt, enabled=interval > 0)
        self.callback = self._line if interval > 0 else None
        self.show = self._line.show

    def close(self) -> None:
        self._line.close()


def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.demo import run_demo

    return run_demo(cfg, seconds=args.seconds)
