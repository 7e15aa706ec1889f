"""``stockpipe dev up | down | status | env``: start, stop and describe the local stack."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stockpipe.config import Config, DevSettings
from stockpipe.dev import tls, tools
from stockpipe.exceptions import DevStackError

Say = Callable[[str], None]
STATE_FILE = "stack.json"
ACCESS_KEY = "stockpipe-dev"
BROKER_USER = "broker"
CLIENT_USER = "stockpipe"


@dataclass
class Layout:
    """Where everything of one stack lives."""

    home: Path

    @property
    def state(self) -> Path:
        return self.home / STATE_FILE

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def broker_dir(self, node: int) -> Path:
        return self.home / f"kafka-{node}"

    @property
    def s3_data(self) -> Path:
        return self.home / "s3"

    @property
    def tls(self) -> Path:
        return self.home / "tls"


def _layout(dev: DevSettings) -> Layout:
    return Layout(Path(dev.home).expanduser().resolve())


def read_state(dev: DevSettings) -> dict[str, Any] | None:
    """The recorded state of the stack, or None when it was never started."""
    path = _layout(dev).state
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _alive(pid: int, marker: str) -> bool:
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


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def _wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    # The Popen handle, not /proc, tells whether a child we just forked has exited: right after
    # fork its command line is still ours.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            raise DevStackError(
                f"{what} exited during startup (code {proc.returncode}); last lines of {log}:\n{_tail(log)}"
            )
        time.sleep(0.25)
    raise DevStackError(f"{what} did not become healthy within {timeout:.0f}s; last lines of {log}:\n{_tail(log)}")


LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
"""


def _kafka_ports(dev: DevSettings, node: int) -> tuple[int, int]:
    base = dev.kafka_port + 2 * (node - 1)
    return base, base + 1


def _listener(dev: DevSettings) -> str:
    """The name (and security protocol) of the client and inter-broker listener."""
    if dev.sasl:
        return "SASL_SSL"
    return "SSL" if dev.tls else "PLAINTEXT"


def _security_properties(dev: DevSettings, layout: Layout, passwords: dict[str, str]) -> str:
    if not dev.tls:
        return ""
    material = tls.Material(layout.tls)
    lines = [
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={material.keystore}",
        f"ssl.keystore.password={material.password}",
        f"ssl.key.password={material.password}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={material.ca}",
        "ssl.endpoint.identification.algorithm=https",
        "ssl.client.auth=none",
    ]
    if dev.sasl:
        lines += [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{passwords["broker"]}";',
        ]
    return "\n".join(lines) + "\n"


def _broker_properties(dev: DevSettings, layout: Layout, node: int, passwords: dict[str, str]) -> str:
    n = dev.brokers
    client, controller = _kafka_ports(dev, node)
    voters = ",".join(f"{i}@127.0.0.1:{_kafka_ports(dev, i)[1]}" for i in range(1, n + 1))
    internal_rf = min(3, n)
    listener = _listener(dev)
    controller_protocol = "SSL" if dev.tls else "PLAINTEXT"
    return f"""process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners={listener}://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}
advertised.listeners={listener}://127.0.0.1:{client}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
listener.security.protocol.map={listener}:{listener},CONTROLLER:{controller_protocol}
log.dirs={layout.broker_dir(node) / "data"}
num.partitions=3
default.replication.factor={min(2, n)}
offsets.topic.replication.factor={internal_rf}
transaction.state.log.replication.factor={internal_rf}
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
{_security_properties(dev, layout, passwords)}"""


def _start_kafka(
    cfg: Config, layout: Layout, say: Say, processes: list[dict[str, Any]], passwords: dict[str, str]
) -> None:
    dev = cfg.dev
    classpath = tools.kafka_classpath(Path(dev.cache_dir), dev.kafka_version, say)
    java = tools.require("java", "run the Kafka broker", "install OpenJDK 17")
    (layout.home / "log4j.properties").write_text(LOG4J)
    shape = layout.home / "kafka-shape"
    wanted = f"{dev.kafka_version} brokers={dev.brokers} port={dev.kafka_port} listener={_listener(dev)}"
    previous = shape.read_text() if shape.exists() else ("unknown" if any(layout.home.glob("kafka-[0-9]*")) else wanted)
    if previous != wanted:
        # The quorum of a cluster of another shape cannot be reused: start from empty storage.
        say(f"the Kafka cluster changed shape ({previous} → {wanted}); formatting new storage")
        for old in layout.home.glob("kafka-[0-9]*"):
            shutil.rmtree(old, ignore_errors=True)
        (layout.home / "cluster-id").unlink(missing_ok=True)
    shape.write_text(wanted)
    cluster_file = layout.home / "cluster-id"
    if not cluster_file.exists():
        raw = uuid.uuid4().bytes
        cluster_file.write_text(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    cluster_id = cluster_file.read_text().strip()
    started = []
    for node in range(1, dev.brokers + 1):
        directory = layout.broker_dir(node)
        directory.mkdir(parents=True, exist_ok=True)
        props = directory / "server.properties"
        props.write_text(_broker_properties(dev, layout, node, passwords))
        props.chmod(0o600)
        log = layout.logs / f"kafka-{node}.log"
        if not (directory / "data" / "meta.properties").exists():
            fmt = [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                f"--config={props}",
            ]
            if dev.sasl:
                # SCRAM credentials live in the cluster metadata; KRaft takes the first ones at format.
                for user, password in ((BROKER_USER, passwords["broker"]), (CLIENT_USER, passwords["client"])):
                    fmt += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
            done = subprocess.run(fmt, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise DevStackError(f"formatting Kafka storage for broker {node} failed: {done.stderr.strip()[-500:]}")
        cmd = [
            java,
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            f"-Dlog4j.configuration=file:{layout.home / 'log4j.properties'}",
            f"-Dstockpipe.dev={layout.home}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ]
        proc = _spawn(cmd, log)
        port = _kafka_ports(dev, node)[0]
        processes.append(
            {"name": f"kafka-{node}", "pid": proc.pid, "marker": str(props), "log": str(log), "port": port, "cmd": cmd}
        )
        started.append((proc, port, log))
    for node, (proc, port, log) in enumerate(started, start=1):
        _wait_until(partial(_port_open, port), 90, f"kafka-{node}", proc, log)


def _wait_for_cluster(
    cfg: Config, bootstrap: str, processes: list[dict[str, Any]], security: dict[str, str]
) -> list[dict[str, Any]]:
    from stockpipe import _native

    kafka = Config(kafka=cfg.kafka).kafka
    kafka.bootstrap_servers = bootstrap
    for key, value in security.items():
        setattr(kafka, key, value)
    payload = json.dumps(_kafka_dict(kafka))
    deadline = time.monotonic() + 90
    last_error = ""
    while time.monotonic() < deadline:
        try:
            brokers = _native.cluster_brokers(payload, 5.0)
            if len(brokers) >= cfg.dev.brokers:
                result: list[dict[str, Any]] = _native.ensure_topics(payload, cfg.kafka.pipeline_topics(), 30.0)
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last_error = str(exc)
        for p in processes:
            if not _alive(int(p["pid"]), str(p["marker"])):
                raise DevStackError(f"{p['name']} exited; last lines of {p['log']}:\n{_tail(Path(p['log']))}")
        time.sleep(0.5)
    raise DevStackError(f"the Kafka cluster did not form within 90s: {last_error}")


def _kafka_dict(kafka: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(kafka)


def _start_s3(
    cfg: Config, layout: Layout, say: Say, secret: str, kms_key: str, processes: list[dict[str, Any]]
) -> None:
    dev = cfg.dev
    binary = tools.minio_binary(Path(dev.cache_dir), say)
    layout.s3_data.mkdir(parents=True, exist_ok=True)
    log = layout.logs / "s3.log"
    env = dict(
        os.environ,
        MINIO_ROOT_USER=ACCESS_KEY,
        MINIO_ROOT_PASSWORD=secret,
        MINIO_KMS_SECRET_KEY=f"stockpipe-dev:{kms_key}",
        MINIO_BROWSER="off",
        MINIO_UPDATE="off",
        MINIO_CI_CD="1",
    )
    cmd = [
        str(binary),
        "server",
        str(layout.s3_data),
        "--address",
        f"127.0.0.1:{dev.s3_port}",
        "--console-address",
        f"127.0.0.1:{dev.s3_port + 1}",
        "--quiet",
    ]
    proc = _spawn(cmd, log, env)
    marker = str(layout.s3_data)
    processes.append({"name": "s3", "pid": proc.pid, "marker": marker, "log": str(log), "port": dev.s3_port})

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{dev.s3_port}/minio/health/live", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    _wait_until(healthy, 60, "the S3 server (MinIO)", proc, log)


def _create_bucket(endpoint: str, secret: str, region: str, bucket: str) -> None:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret, region_name=region
    )
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise DevStackError(f"cannot create bucket {bucket}: {exc}") from None


def _credentials(layout: Layout) -> tuple[str, str]:
    data = _secrets(layout)
    return str(data["secret"]), str(data["kms_key"])


def _secrets(layout: Layout) -> dict[str, str]:
    """The stack's generated secrets, made once per home (mode 600)."""
    path = layout.home / "credentials.json"
    data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted: dict[str, Callable[[], str]] = {
        "secret": lambda: secrets.token_urlsafe(24),
        "kms_key": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
        "kafka_broker_password": lambda: secrets.token_urlsafe(18),
        "kafka_client_password": lambda: secrets.token_urlsafe(18),
    }
    missing = {k: make() for k, make in wanted.items() if k not in data}
    if missing:
        data.update(missing)
        layout.home.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        path.chmod(0o600)
    return data


def client_security(dev: DevSettings, layout: Layout | None = None) -> dict[str, str]:
    """The ``[kafka]`` settings a client needs to reach this stack's listener."""
    layout = layout or _layout(dev)
    if not dev.tls:
        return {}
    out = {"security_protocol": _listener(dev).lower(), "ssl_ca_location": str(tls.Material(layout.tls).ca)}
    if dev.sasl:
        out.update(
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=CLIENT_USER,
            sasl_password=_secrets(layout)["kafka_client_password"],
        )
    return out


def up(cfg: Config, say: Say = print) -> dict[str, Any]:
    """Starts the stack (idempotent) and returns its state."""
    dev = cfg.dev
    if dev.sasl and not dev.tls:
        raise DevStackError("--sasl needs --tls: the dev stack sends SCRAM credentials only over TLS")
    layout = _layout(dev)
    state = read_state(dev)
    if state is not None:
        running = state.get("processes", [])
        if running and all(_alive(int(p["pid"]), str(p["marker"])) for p in running):
            shape = (state.get("brokers"), state.get("listener", "PLAINTEXT"))
            if shape != (dev.brokers, _listener(dev)):
                raise DevStackError(
                    f"a stack with {shape[0]} broker(s) and a {shape[1]} listener is already running; "
                    "run 'stockpipe dev down' first"
                )
            say("the dev stack is already running")
            return state
        down(cfg, say=lambda _m: None)
    layout.home.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    wanted = {f"kafka-{n} client": _kafka_ports(dev, n)[0] for n in range(1, dev.brokers + 1)}
    wanted.update({f"kafka-{n} controller": _kafka_ports(dev, n)[1] for n in range(1, dev.brokers + 1)})
    wanted.update({"s3": dev.s3_port, "s3 console": dev.s3_port + 1})
    for what, port in wanted.items():
        if not _port_free(port):
            raise DevStackError(
                f"port {port} ({what}) is already in use; stop what uses it or set [dev] kafka_port / s3_port "
                "(STOCKPIPE_DEV_KAFKA_PORT, STOCKPIPE_DEV_S3_PORT)"
            )
    secret, kms_key = _credentials(layout)
    kept = _secrets(layout)
    passwords = {"broker": kept["kafka_broker_password"], "client": kept["kafka_client_password"]}
    if dev.tls:
        say(f"TLS: CA and broker certificate in {layout.tls}")
        tls.ensure(layout.tls)
    security = client_security(dev, layout)
    processes: list[dict[str, Any]] = []
    bootstrap = ",".join(f"127.0.0.1:{_kafka_ports(dev, n)[0]}" for n in range(1, dev.brokers + 1))
    endpoint = f"http://127.0.0.1:{dev.s3_port}"
    region = cfg.s3.region
    state = {
        "brokers": dev.brokers,
        "listener": _listener(dev),
        "kafka_security": security,
        "bootstrap_servers": bootstrap,
        "s3_endpoint_url": endpoint,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": secret,
        "aws_region": region,
        "bucket": dev.bucket,
        "home": str(layout.home),
        "processes": processes,
    }
    try:
        say(f"starting the S3 server on {endpoint} ...")
        _start_s3(cfg, layout, say, secret, kms_key, processes)
        _write_state(layout, state)
        _create_bucket(endpoint, secret, region, dev.bucket)
        say(f"starting {dev.brokers} Kafka broker(s) (KRaft) on {bootstrap} ...")
        _start_kafka(cfg, layout, say, processes, passwords)
        _write_state(layout, state)
        state["topics"] = _wait_for_cluster(cfg, bootstrap, processes, security)
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


def stop_process(proc: dict[str, Any], grace: float = 15.0) -> bool:
    """Stops one recorded process: SIGTERM, then SIGKILL after ``grace`` seconds."""
    pid, marker = int(proc["pid"]), str(proc["marker"])
    if not _alive(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid, marker):
        time.sleep(0.1)
    if _alive(pid, marker):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid, marker):
            time.sleep(0.05)
    return True


def down(cfg: Config, say: Say = print) -> list[str]:
    """Stops exactly the processes the stack started; returns their names."""
    state = read_state(cfg.dev)
    if state is None:
        say("the dev stack is not running")
        return []
    stopped = []
    # Brokers first (so none waits for a controller that is already gone), S3 last.
    for proc in sorted(state.get("processes", []), key=lambda p: p["name"] == "s3"):
        if stop_process(proc):
            stopped.append(str(proc["name"]))
            say(f"stopped {proc['name']} (pid {proc['pid']})")
    _layout(cfg.dev).state.unlink(missing_ok=True)
    return stopped


def status(cfg: Config) -> dict[str, Any]:
    """What runs: each recorded process with its pid, port and log."""
    state = read_state(cfg.dev)
    if state is None:
        return {"running": False, "processes": []}
    procs = []
    for p in state.get("processes", []):
        procs.append({**p, "alive": _alive(int(p["pid"]), str(p["marker"]))})
    return {**state, "running": bool(procs) and all(p["alive"] for p in procs), "processes": procs}


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
            stop_process(proc, grace=grace)
            return
    raise DevStackError(f"no service {name!r} in the stack")


def start_service(cfg: Config, name: str) -> None:
    """Starts a stopped service again with its recorded settings (fault tests)."""
    state = read_state(cfg.dev)
    if state is None:
        raise DevStackError("the dev stack is not running")
    layout = _layout(cfg.dev)
    if name == "s3":
        secret, kms_key = _credentials(layout)
        kept = [p for p in state["processes"] if p["name"] != "s3"]
        _start_s3(cfg, layout, lambda _m: None, secret, kms_key, kept)
        state["processes"] = kept
        _write_state(layout, state)
        return
    proc = next((p for p in state["processes"] if p["name"] == name and "cmd" in p), None)
    if proc is None:
        raise DevStackError(f"cannot restart {name!r}")
    if _alive(int(proc["pid"]), str(proc["marker"])):
        return
    log = Path(proc["log"])
    popen = _spawn([str(c) for c in proc["cmd"]], log)
    proc["pid"] = popen.pid
    _write_state(layout, state)
    _wait_until(partial(_port_open, int(proc["port"])), 90, name, popen, log)


def signal_service(cfg: Config, name: str, sig: int) -> int:
    """Sends ``sig`` to one service of the stack (kill -9, SIGSTOP, SIGCONT); returns its pid."""
    state = read_state(cfg.dev)
    if state is None:
        raise DevStackError("the dev stack is not running")
    for proc in state["processes"]:
        if proc["name"] == name and _alive(int(proc["pid"]), str(proc["marker"])):
            os.kill(int(proc["pid"]), sig)
            if sig == signal.SIGKILL:
                while _alive(int(proc["pid"]), str(proc["marker"])):
                    time.sleep(0.02)
            return int(proc["pid"])
    raise DevStackError(f"{name!r} is not running")
