"""``stockpipe dev up | down | status | env``: start, stop and describe the local stack.

The stack is an S3 server (``dev.s3``) and a Kafka cluster (``dev.kafka``), their processes
(``dev.procs``) recorded in a state file under ``[dev] home`` (``dev.layout``), so ``down`` stops
exactly what ``up`` started.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from stockpipe.config import Config
from stockpipe.dev import kafka, procs, s3, tls
from stockpipe.dev.layout import Layout
from stockpipe.exceptions import DevStackError
from stockpipe.settings import DevSettings

Say = Callable[[str], None]


def read_state(dev: DevSettings) -> dict[str, Any] | None:
    """The recorded state of the stack, or None when it was never started."""
    path = Layout.of(dev).state
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def up(cfg: Config, say: Say = print) -> dict[str, Any]:
    """Starts the stack (idempotent) and returns its state."""
    dev = cfg.dev
    if dev.sasl and not dev.tls:
        raise DevStackError("--sasl needs --tls: the dev stack sends SCRAM credentials only over TLS")
    layout = Layout.of(dev)
    state = read_state(dev)
    if state is not None:
        running = state.get("processes", [])
        if running and all(procs.alive(int(p["pid"]), str(p["marker"])) for p in running):
            shape = (state.get("brokers"), state.get("listener", "PLAINTEXT"))
            if shape != (dev.brokers, kafka.listener(dev)):
                raise DevStackError(
                    f"a stack with {shape[0]} broker(s) and a {shape[1]} listener is already running; "
                    "run 'stockpipe dev down' first"
                )
            say("the dev stack is already running")
            return state
        down(cfg, say=lambda _m: None)
    layout.home.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    wanted = {f"kafka-{n} client": kafka.ports(dev, n)[0] for n in range(1, dev.brokers + 1)}
    wanted.update({f"kafka-{n} controller": kafka.ports(dev, n)[1] for n in range(1, dev.brokers + 1)})
    wanted.update({"s3": dev.s3_port, "s3 console": dev.s3_port + 1})
    for what, port in wanted.items():
        if not procs.port_free(port):
            raise DevStackError(
                f"port {port} ({what}) is already in use; stop what uses it or set [dev] kafka_port / s3_port "
                "(STOCKPIPE_DEV_KAFKA_PORT, STOCKPIPE_DEV_S3_PORT)"
            )
    kept = layout.secrets()
    if dev.tls:
        say(f"TLS: CA and broker certificate in {layout.tls}")
        tls.ensure(layout.tls)
    security = kafka.client_security(dev, layout)
    processes: list[dict[str, Any]] = []
    bootstrap = kafka.bootstrap(dev)
    endpoint = f"http://127.0.0.1:{dev.s3_port}"
    region = cfg.s3.region
    state = {
        "brokers": dev.brokers,
        "listener": kafka.listener(dev),
        "kafka_security": security,
        "bootstrap_servers": bootstrap,
        "s3_endpoint_url": endpoint,
        "aws_access_key_id": s3.ACCESS_KEY,
        "aws_secret_access_key": kept["secret"],
        "aws_region": region,
        "bucket": dev.bucket,
        "home": str(layout.home),
        "processes": processes,
    }
    try:
        say(f"starting the S3 server on {endpoint} ...")
        s3.start(cfg, layout, say, processes)
        _write_state(layout, state)
        s3.create_bucket(endpoint, kept["secret"], region, dev.bucket)
        say(f"starting {dev.brokers} Kafka broker(s) (KRaft) on {bootstrap} ...")
        kafka.start(cfg, layout, say, processes)
        _write_state(layout, state)
        state["topics"] = kafka.wait_for_cluster(cfg, bootstrap, processes, security)
    except BaseException:
        _write_state(layout, state)
        down(cfg, say=lambda _m: None)
        raise
    _write_state(layout, state)
    return state


def _write_state(layout: Layout, state: dict[str, Any]) -> None:
    layout.home.mkdir(parents=True, exist_ok=True)
    tmp = layout.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(layout.state)


def down(cfg: Config, say: Say = print) -> list[str]:
    """Stops exactly the processes the stack started; returns their names."""
    state = read_state(cfg.dev)
    if state is None:
        say("the dev stack is not running")
        return []
    stopped = []
    # Brokers first (so none waits for a controller that is already gone), S3 last.
    for proc in sorted(state.get("processes", []), key=lambda p: p["name"] == "s3"):
        if procs.stop_process(proc):
            stopped.append(str(proc["name"]))
            say(f"stopped {proc['name']} (pid {proc['pid']})")
    Layout.of(cfg.dev).state.unlink(missing_ok=True)
    return stopped


def status(cfg: Config) -> dict[str, Any]:
    """What runs: each recorded process with its pid, port and log."""
    state = read_state(cfg.dev)
    if state is None:
        return {"running": False, "processes": []}
    found = [{**p, "alive": procs.alive(int(p["pid"]), str(p["marker"]))} for p in state.get("processes", [])]
    return {**state, "running": bool(found) and all(p["alive"] for p in found), "processes": found}


def client_env(state: dict[str, Any]) -> dict[str, str]:
    """The environment variables that point every command at the stack."""
    values = {
        "STOCKPIPE_KAFKA_BOOTSTRAP_SERVERS": state["bootstrap_servers"],
        "STOCKPIPE_S3_ENDPOINT_URL": state["s3_endpoint_url"],
        "AWS_ACCESS_KEY_ID": state["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": state["aws_secret_access_key"],
        "AWS_REGION": state["aws_region"],
        "STOCKPIPE_SINK_OUTPUT": f"s3://{state['bucket']}",
        "STOCKPIPE_TRANSFORM_INPUT": f"s3://{state['bucket']}",
        "STOCKPIPE_TRANSFORM_OUTPUT": f"s3://{state['bucket']}",
    }
    for key, value in state.get("kafka_security", {}).items():
        values[f"STOCKPIPE_KAFKA_{key.upper()}"] = value
    return {k: str(v) for k, v in values.items()}


def kafka_client_conf(state: dict[str, Any]) -> dict[str, Any]:
    """librdkafka (confluent-kafka) settings that reach the stack, TLS and SASL included."""
    conf: dict[str, Any] = {"bootstrap.servers": str(state["bootstrap_servers"])}
    for key, value in state.get("kafka_security", {}).items():
        conf[key.replace("_", ".")] = value
    return conf


def s3_client(state: dict[str, Any]) -> Any:
    """A boto3 S3 client for the stack's S3 server."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=state["s3_endpoint_url"],
        aws_access_key_id=state["aws_access_key_id"],
        aws_secret_access_key=state["aws_secret_access_key"],
        region_name=state["aws_region"],
    )


def env_lines(state: dict[str, Any]) -> list[str]:
    """``export NAME=value`` lines that point every command at the stack."""
    return [f"export {k}={_shell_quote(v)}" for k, v in client_env(state).items()]


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def stop_service(cfg: Config, name: str, grace: float = 5) -> None:
    """Stops one service of the running stack (fault tests: the S3 server going away)."""
    state = read_state(cfg.dev)
    if state is None:
        raise DevStackError("the dev stack is not running")
    for proc in state["processes"]:
        if proc["name"] == name:
            procs.stop_process(proc, grace=grace)
            return
    raise DevStackError(f"no service {name!r} in the stack")


def start_service(cfg: Config, name: str) -> None:
    """Starts a stopped service again with its recorded settings (fault tests)."""
    state = read_state(cfg.dev)
    if state is None:
        raise DevStackError("the dev stack is not running")
    layout = Layout.of(cfg.dev)
    if name == "s3":
        kept = [p for p in state["processes"] if p["name"] != "s3"]
        s3.start(cfg, layout, lambda _m: None, kept)
        state["processes"] = kept
        _write_state(layout, state)
        return
    proc = next((p for p in state["processes"] if p["name"] == name and "cmd" in p), None)
    if proc is None:
        raise DevStackError(f"cannot restart {name!r}")
    if procs.alive(int(proc["pid"]), str(proc["marker"])):
        return
    log = Path(proc["log"])
    popen = procs.spawn([str(c) for c in proc["cmd"]], log)
    proc["pid"] = popen.pid
    _write_state(layout, state)
    procs.wait_until(partial(procs.port_open, int(proc["port"])), 90, name, popen, log)


def signal_service(cfg: Config, name: str, sig: int) -> int:
    """Sends ``sig`` to one service of the stack (kill -9, SIGSTOP, SIGCONT); returns its pid."""
    state = read_state(cfg.dev)
    if state is None:
        raise DevStackError("the dev stack is not running")
    for proc in state["processes"]:
        if proc["name"] == name and procs.alive(int(proc["pid"]), str(proc["marker"])):
            os.kill(int(proc["pid"]), sig)
            if sig == signal.SIGKILL:
                while procs.alive(int(proc["pid"]), str(proc["marker"])):
                    time.sleep(0.02)
            return int(proc["pid"])
    raise DevStackError(f"{name!r} is not running")
