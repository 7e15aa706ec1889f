"""The ``stockpipe`` command line.

Every option of every command is also a ``config.ini`` key and an environment
variable: ``--bootstrap-servers`` ↔ ``[kafka] bootstrap_servers`` ↔
``STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS``. A user's mistake ends with one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from types import FrameType
from typing import Any

from stockpipe import __version__
from stockpipe.config import Config, env_names, fields_of, flag_for, load_config
from stockpipe.exceptions import ConfigError, IngestError, StockpipeError
from stockpipe.settings import SECTIONS

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Config], int]
log = logging.getLogger("stockpipe")

_PRODUCING = {("kafka", k) for k in ("compression", "linger_ms", "batch_size_bytes", "idempotence")}
_GLUE_JOB = {("glue", k) for k in ("job_name", "glue_version", "worker_type", "workers", "source", "poll_seconds")}
_GLUE_CATALOG = {("glue", k) for k in ("lake", "role", "database", "raw_table", "processed_table", "crawler")}
_PARQUET = {("transform", k) for k in ("quarantine_prefix", "compression", "rows_per_file", "sse")}
NOT_READ_BY = {
    "produce": {("kafka", "group_id")},
    "sink": {("kafka", "quotes_topic")},
    "topics": {("kafka", "group_id"), *_PRODUCING},
    "load": {("warehouse", "format")},
    "query": {("warehouse", "input"), ("warehouse", "iam_role"), ("s3", "endpoint_url"), ("s3", "force_path_style")},
    "glue setup": {*_GLUE_JOB, ("transform", "input"), ("transform", "engine"), *_PARQUET},
    "glue deploy": {("glue", "processed_table"), ("glue", "crawler"), ("glue", "poll_seconds")}
    | {("transform", "input"), ("transform", "engine")},
    "glue run": (_GLUE_JOB | _GLUE_CATALOG) - {("glue", "job_name"), ("glue", "poll_seconds")}
    | {("s3", "endpoint_url"), ("s3", "region"), ("s3", "force_path_style")},
}
"""Settings of a section a command never reads, left out of its flags (they stay settable in the file and
the environment, which the commands share): the producer joins no consumer group, the sink publishes no
quotes (its dead letters do use the producer settings), creating topics produces nothing, a load prints no
query result, and a query reads no files. Of Glue, ``setup`` makes the catalog and crawler, ``deploy`` the
job (its arguments carry the Parquet settings), and ``run`` starts the deployed job by name (the keys are
the ones its Glue client signs with)."""


def _default_text(f: dataclasses.Field[Any]) -> str | None:
    """A setting's built-in default as a flag's help shows it; None for secrets and empty values."""
    if f.metadata["secret"]:
        return None
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None or value == "" or value == {} or value == []:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return ",".join(value) if isinstance(value, list) else str(value)


def _add_sections(
    parser: argparse.ArgumentParser, sections: Sequence[str], *, skip: Collection[tuple[str, str]] = ()
) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="config.ini to read (default: $STOCKPIPE_CONFIG or ./config.ini)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    for section in sections:
        group = parser.add_argument_group(f"[{section}] settings")
        for f in fields_of(section):
            if (section, f.name) in skip:
                continue
            default = _default_text(f)
            where = f"env {' or '.join(env_names(section, f.name))}"
            help_text = f"{f.metadata['help']} ({'default ' + default + '; ' if default else ''}{where})"
            help_text = help_text.replace("%", "%%")  # argparse formats help with %
            dest = f"{section}__{f.name}"
            kind = str(f.type)
            if kind.startswith("bool"):
                group.add_argument(
                    flag_for(f), dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
                )
            else:
                group.add_argument(flag_for(f), dest=dest, metavar=f.name.upper(), default=None, help=help_text)


def _flags(ns: argparse.Namespace) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for dest, value in vars(ns).items():
        if "__" in dest and value is not None:
            section, key = dest.split("__", 1)
            if section in SECTIONS:
                out[(section, key)] = value if isinstance(value, bool) else str(value)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "stockpipe") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog, description="Real-time stock-market data pipeline: Finnhub → Kafka → S3 → Parquet → warehouse."
    )
    parser.add_argument("--version", action="version", version=f"stockpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    text = "print every setting (secrets redacted) and where it came from"
    p = sub.add_parser(
        "config", help="show the effective configuration", description=text + ": a config.ini, or JSON with --json."
    )
    p.add_argument("action", nargs="?", choices=["show"], default="show", metavar="show", help=text + " (the default)")
    _add_sections(p, [])
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_config_show)

    p = sub.add_parser("dev", help="a local stack of real Kafka and S3 servers")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    dsub.required = True
    for name, handler, text in [
        ("up", cmd_dev_up, "start Kafka (KRaft) and the S3 server, create buckets and topics"),
        ("down", cmd_dev_down, "stop every process the stack started"),
        ("status", cmd_dev_status, "say what runs"),
        ("env", cmd_dev_env, 'print export lines: eval "$(stockpipe dev env)"'),
    ]:
        d = dsub.add_parser(name, help=text, description=text)
        _add_sections(d, ["dev", "s3"] if name == "up" else ["dev"])
        d.set_defaults(handler=handler)
    text = "the fault suite: break brokers, sinks, S3 and the WebSocket; check every record against the ledger"
    d = dsub.add_parser(
        "chaos",
        help=text,
        description=text + ". Starts its own 3-broker stack (home <cache>/chaos, ports 24092+ and 24000 "
        "unless set) and stops it afterwards. Exit 1 when a gate fails or a control run passes.",
    )
    _add_sections(d, ["dev"])
    d.add_argument("--scenario", action="append", metavar="NAME", help="run only this scenario (repeatable)")
    d.add_argument("--list", action="store_true", help="list the scenarios and exit")
    d.add_argument("--out", metavar="FILE", help="also write the table as Markdown (with date and version)")
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.set_defaults(handler=cmd_dev_chaos)

    p = sub.add_parser("simulate", help="serve the Finnhub protocol locally (WebSocket + REST)")
    _add_sections(p, ["simulate"])
    p.set_defaults(handler=cmd_simulate)

    p = sub.add_parser("produce", help="Finnhub WebSocket → Kafka (same as python -m stockpipe.producer)")
    _add_sections(p, ["finnhub", "kafka", "producer"], skip=NOT_READ_BY["produce"])
    p.set_defaults(handler=cmd_produce)

    p = sub.add_parser("sink", help="Kafka → S3 / files as JSONL batches (same as python -m stockpipe.consumer)")
    _add_sections(p, ["kafka", "sink", "s3"], skip=NOT_READ_BY["sink"])
    p.set_defaults(handler=cmd_sink)

    text = "create the pipeline's topics where missing and show partitions and replication"
    p = sub.add_parser("topics", help=text, description=text + " (an admin call: same security settings).")
    _add_sections(p, ["kafka"], skip=NOT_READ_BY["topics"])
    p.set_defaults(handler=cmd_topics)

    text = "raw JSONL → Parquet with the shared cleaning rules (Rust engine, or the Glue job on Spark)"
    p = sub.add_parser("etl", help=text, description=text + ". Rebuilds only days whose raw objects changed.")
    _add_sections(p, ["transform", "s3"])
    days = p.add_mutually_exclusive_group()
    days.add_argument("--date", metavar="YYYY-MM-DD", help="only this UTC day")
    days.add_argument("--since", metavar="YYYY-MM-DD", help="only this day and later ones")
    p.add_argument(
        "--full", action="store_true", help="rebuild the selected days even if their raw objects did not change"
    )
    p.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
    p.set_defaults(handler=cmd_etl)

    text = "load processed.data/ Parquet into stock_prices (DuckDB by default, or Redshift); rerunnable"
    p = sub.add_parser("load", help=text, description=text)
    _add_sections(p, ["warehouse", "s3"], skip=NOT_READ_BY["load"])
    days = p.add_mutually_exclusive_group()
    days.add_argument("--date", metavar="YYYY-MM-DD", help="only this UTC day")
    days.add_argument("--since", metavar="YYYY-MM-DD", help="only this day and later ones")
    p.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
    p.set_defaults(handler=cmd_load)

    from stockpipe.queries import ANALYTICS

    text = "run an analytics query (by name) or any SQL in the Redshift dialect against the warehouse"
    more = "DuckDB is opened read-only: statements that change it are refused (stockpipe load writes it)."
    p = sub.add_parser("query", help=text, description=f"{text}. {more}", epilog=f"queries: {', '.join(ANALYTICS)}")
    p.add_argument("sql", metavar="NAME|SQL", help="a query name (see below) or SQL text")
    _add_sections(p, ["warehouse", "s3"], skip=NOT_READ_BY["query"])
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("glue", help="AWS Glue: catalog tables and crawler, the transform job")
    gsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    gsub.required = True
    for name, handler, text in [
        ("setup", cmd_glue_setup, "create/update database stock_db, raw and processed tables with partitions, crawler"),
        ("deploy", cmd_glue_deploy, "upload the job script and package to S3, create/update the Glue job"),
        ("run", cmd_glue_run, "start the Glue job and follow its state until it ends"),
    ]:
        d = gsub.add_parser(name, help=text, description=text)
        sections = ["glue", "s3"] if name == "run" else ["glue", "transform", "s3"]
        _add_sections(d, sections, skip=NOT_READ_BY[f"glue {name}"])
        if name == "run":
            d.add_argument("--no-wait", action="store_true", help="return once the run has started")
        d.set_defaults(handler=handler)

    p = sub.add_parser("demo", help="run the pipeline end to end on the embedded defaults")
    from stockpipe.demo import DEMO_SETS

    _add_sections(p, ["dev", "simulate", "kafka"], skip=DEMO_SETS)
    p.add_argument("--seconds", type=float, default=60.0, help="how long to stream trades (default 60)")
    p.set_defaults(handler=cmd_demo)
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _sigterm_as_interrupt() -> None:
    """SIGTERM stops a command the way Ctrl-C does: stop reading, flush, report."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None, prog: str = "stockpipe") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0))
    try:
        return _run(args, prog)
    except KeyboardInterrupt:  # also one arriving while an error is reported
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


def _run(args: argparse.Namespace, prog: str) -> int:
    cfg: Config | None = None
    try:
        cfg = load_config(args.config, flags=_flags(args)) if hasattr(args, "config") else load_config()
        _sigterm_as_interrupt()
        code: int = args.handler(args, cfg)
        return code
    except StockpipeError as exc:
        message = cfg.scrub(str(exc)) if cfg is not None else str(exc)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


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


def _announce_metrics(stage: str, address: str | None) -> None:
    if address:
        print(f"{stage}: Prometheus metrics at http://{address}/metrics while running", file=sys.stderr)


def cmd_produce(args: argparse.Namespace, cfg: Config) -> int:
    from stockpipe.producer import Producer, format_quotes_status, format_status

    _explain_missing_key(cfg)
    line = format_quotes_status if cfg.producer.mode == "quotes" else format_status
    status = StatusLineFor(cfg.producer.status_interval, line)
    _announce_metrics("producer", cfg.producer.metrics_address)
    try:
        stats = Producer(cfg).run(status=status.callback)
    finally:
        status.close()
    print(f"producer: {stats.summary()}", file=sys.stderr)
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

    status = StatusLineFor(cfg.sink.status_interval, format_status)
    _announce_metrics("sink", cfg.sink.metrics_address)
    try:
        stats = Sink(cfg).run(status=status.callback)
    finally:
        status.close()
    print(f"sink: {stats.summary()}", file=sys.stderr)
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
    from stockpipe.exceptions import ConfigError

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


if __name__ == "__main__":
    sys.exit(main())
