"""The stack's Kafka cluster: KRaft brokers from the Maven jars, their listeners, TLS and SCRAM users."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from stockpipe.config import Config
from stockpipe.dev import procs, tls, tools
from stockpipe.dev.layout import Layout
from stockpipe.exceptions import DevStackError
from stockpipe.settings import DevSettings

Say = Callable[[str], None]
BROKER_USER = "broker"
CLIENT_USER = "stockpipe"

LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
"""


def ports(dev: DevSettings, node: int) -> tuple[int, int]:
    """Broker ``node``'s client and controller ports."""
    base = dev.kafka_port + 2 * (node - 1)
    return base, base + 1


def bootstrap(dev: DevSettings) -> str:
    return ",".join(f"127.0.0.1:{ports(dev, n)[0]}" for n in range(1, dev.brokers + 1))


def listener(dev: DevSettings) -> str:
    """The name (and security protocol) of the client and inter-broker listener."""
    if dev.sasl:
        return "SASL_SSL"
    return "SSL" if dev.tls else "PLAINTEXT"


def client_security(dev: DevSettings, layout: Layout) -> dict[str, str]:
    """The ``[kafka]`` settings a client needs to reach this stack's listener."""
    if not dev.tls:
        return {}
    out = {"security_protocol": listener(dev).lower(), "ssl_ca_location": str(tls.Material(layout.tls).ca)}
    if dev.sasl:
        out.update(
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=CLIENT_USER,
            sasl_password=layout.secrets()["kafka_client_password"],
        )
    return out


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
    client, controller = ports(dev, node)
    voters = ",".join(f"{i}@127.0.0.1:{ports(dev, i)[1]}" for i in range(1, n + 1))
    internal_rf = min(3, n)
    name = listener(dev)
    controller_protocol = "SSL" if dev.tls else "PLAINTEXT"
    return f"""process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners={name}://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}
advertised.listeners={name}://127.0.0.1:{client}
controller.listener.names=CONTROLLER
inter.broker.listener.name={name}
listener.security.protocol.map={name}:{name},CONTROLLER:{controller_protocol}
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


def _cluster_id(dev: DevSettings, layout: Layout, say: Say) -> str:
    """The cluster's id, kept across restarts; storage of a cluster of another shape is dropped."""
    shape = layout.home / "kafka-shape"
    wanted = f"{dev.kafka_version} brokers={dev.brokers} port={dev.kafka_port} listener={listener(dev)}"
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
    return cluster_file.read_text().strip()


def start(cfg: Config, layout: Layout, say: Say, processes: list[dict[str, Any]]) -> None:
    """Formats each broker's storage where new, starts the brokers and waits for their ports."""
    dev = cfg.dev
    kept = layout.secrets()
    passwords = {"broker": kept["kafka_broker_password"], "client": kept["kafka_client_password"]}
    classpath = tools.kafka_classpath(Path(dev.cache_dir), dev.kafka_version, say)
    java = tools.require("java", "run the Kafka broker", "install OpenJDK 17")
    (layout.home / "log4j.properties").write_text(LOG4J)
    cluster_id = _cluster_id(dev, layout, say)
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
        proc = procs.spawn(cmd, log)
        port = ports(dev, node)[0]
        processes.append(
            {"name": f"kafka-{node}", "pid": proc.pid, "marker": str(props), "log": str(log), "port": port, "cmd": cmd}
        )
        started.append((proc, port, log))
    for node, (proc, port, log) in enumerate(started, start=1):
        procs.wait_until(partial(procs.port_open, port), 90, f"kafka-{node}", proc, log)


def wait_for_cluster(
    cfg: Config, servers: str, processes: list[dict[str, Any]], security: dict[str, str]
) -> list[dict[str, Any]]:
    """Waits until every broker is in the cluster, then creates the pipeline's topics."""
    from stockpipe import _native

    kafka = Config(kafka=cfg.kafka).kafka
    kafka.bootstrap_servers = servers
    for key, value in security.items():
        setattr(kafka, key, value)
    payload = json.dumps(dataclasses.asdict(kafka))
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
            if not procs.alive(int(p["pid"]), str(p["marker"])):
                raise DevStackError(f"{p['name']} exited; last lines of {p['log']}:\n{procs.tail(Path(p['log']))}")
        time.sleep(0.5)
    raise DevStackError(f"the Kafka cluster did not form within 90s: {last_error}")
