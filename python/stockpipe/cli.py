"""The ``stockpipe`` command line.

Every option of every command is also a ``config.ini`` key and an environment
variable: ``--bootstrap-servers`` ↔ ``[kafka] bootstrap_servers`` ↔
``STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS``. A user's mistake ends with one line on
stderr and a non-zero exit, never a traceback. This module builds the parser and
loads the configuration; :mod:`stockpipe.commands` holds what each command does.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Collection, Sequence
from types import FrameType
from typing import Any

from stockpipe import __version__, commands
from stockpipe.config import Config, env_names, fields_of, flag_for, load_config
from stockpipe.exceptions import ConfigError, StockpipeError
from stockpipe.settings import SECTIONS

__all__ = ["main"]


_PRODUCING = {("kafka", k) for k in ("compression", "linger_ms", "batch_size_bytes", "idempotence")}
_GLUE_JOB = {("glue", k) for k in ("job_name", "glue_version", "worker_type", "workers", "source", "poll_seconds")}
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
    "glue run": {("glue", k) for k in ("lake", "role", "database", "raw_table", "processed_table", "crawler")}
    | {("glue", k) for k in ("glue_version", "worker_type", "workers", "source")}
    | {("s3", k) for k in ("endpoint_url", "region", "force_path_style")},
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


def build_parser(prog: str = "stockpipe", command: str | None = None) -> argparse.ArgumentParser:
    """The ``stockpipe`` parser; with ``command``, ``prog`` runs that one command alone
    (``python -m stockpipe.consumer`` is ``stockpipe sink``), and its usage line says so."""
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
    p.set_defaults(handler=commands.cmd_config_show)

    p = sub.add_parser("dev", help="a local stack of real Kafka and S3 servers")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    dsub.required = True
    for name, handler, text in [
        ("up", commands.cmd_dev_up, "start Kafka (KRaft) and the S3 server, create buckets and topics"),
        ("down", commands.cmd_dev_down, "stop every process the stack started"),
        ("status", commands.cmd_dev_status, "say what runs"),
        ("env", commands.cmd_dev_env, 'print export lines: eval "$(stockpipe dev env)"'),
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
    d.set_defaults(handler=commands.cmd_dev_chaos)

    p = sub.add_parser("simulate", help="serve the Finnhub protocol locally (WebSocket + REST)")
    _add_sections(p, ["simulate"])
    p.set_defaults(handler=commands.cmd_simulate)

    p = sub.add_parser("produce", help="Finnhub WebSocket → Kafka (same as python -m stockpipe.producer)")
    _add_sections(p, ["finnhub", "kafka", "producer"], skip=NOT_READ_BY["produce"])
    p.set_defaults(handler=commands.cmd_produce)

    p = sub.add_parser("sink", help="Kafka → S3 / files as JSONL batches (same as python -m stockpipe.consumer)")
    _add_sections(p, ["kafka", "sink", "s3"], skip=NOT_READ_BY["sink"])
    p.set_defaults(handler=commands.cmd_sink)

    text = "create the pipeline's topics where missing and show partitions and replication"
    p = sub.add_parser("topics", help=text, description=text + " (an admin call: same security settings).")
    _add_sections(p, ["kafka"], skip=NOT_READ_BY["topics"])
    p.set_defaults(handler=commands.cmd_topics)

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
    p.set_defaults(handler=commands.cmd_etl)

    text = "load processed.data/ Parquet into stock_prices (DuckDB by default, or Redshift); rerunnable"
    p = sub.add_parser("load", help=text, description=text)
    _add_sections(p, ["warehouse", "s3"], skip=NOT_READ_BY["load"])
    days = p.add_mutually_exclusive_group()
    days.add_argument("--date", metavar="YYYY-MM-DD", help="only this UTC day")
    days.add_argument("--since", metavar="YYYY-MM-DD", help="only this day and later ones")
    p.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
    p.set_defaults(handler=commands.cmd_load)

    from stockpipe.queries import ANALYTICS

    text = "run an analytics query (by name) or any SQL in the Redshift dialect against the warehouse"
    more = "DuckDB is opened read-only: statements that change it are refused (stockpipe load writes it)."
    p = sub.add_parser("query", help=text, description=f"{text}. {more}", epilog=f"queries: {', '.join(ANALYTICS)}")
    p.add_argument("sql", metavar="NAME|SQL", help="a query name (see below) or SQL text")
    _add_sections(p, ["warehouse", "s3"], skip=NOT_READ_BY["query"])
    p.set_defaults(handler=commands.cmd_query)

    p = sub.add_parser("glue", help="AWS Glue: catalog tables and crawler, the transform job")
    gsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    gsub.required = True
    lake = ["glue", "transform", "s3"]  # setup and deploy place tables and the job in the lake
    for name, handler, sections, text in [
        (
            "setup",
            commands.cmd_glue_setup,
            lake,
            "create/update database stock_db, raw and processed tables with partitions, crawler",
        ),
        (
            "deploy",
            commands.cmd_glue_deploy,
            lake,
            "upload the job script and package to S3, create/update the Glue job",
        ),
        ("run", commands.cmd_glue_run, ["glue", "s3"], "start the Glue job and follow its state until it ends"),
    ]:
        d = gsub.add_parser(name, help=text, description=text)
        _add_sections(d, sections, skip=NOT_READ_BY[f"glue {name}"])
        if name == "run":
            d.add_argument("--no-wait", action="store_true", help="return once the run has started")
        d.set_defaults(handler=handler)

    p = sub.add_parser("demo", help="run the pipeline end to end on the embedded defaults")
    from stockpipe.demo import DEMO_SETS

    _add_sections(p, ["dev", "simulate", "kafka"], skip=DEMO_SETS)
    p.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="how long to stream trades (default 60; from the simulator: as many as it sends in that time)",
    )
    p.set_defaults(handler=commands.cmd_demo)
    if command is not None:
        sub.choices[command].prog = prog
        sub.choices[command].add_argument("--version", action="version", version=f"stockpipe {__version__}")
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


def main(argv: Sequence[str] | None = None, prog: str = "stockpipe", command: str | None = None) -> int:
    """Runs ``stockpipe ARGV``, or with ``command`` runs ``stockpipe COMMAND ARGV`` under the name ``prog``."""
    parser = build_parser(prog, command)
    if command is not None:
        argv = [command, *(sys.argv[1:] if argv is None else argv)]
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


if __name__ == "__main__":
    sys.exit(main())
