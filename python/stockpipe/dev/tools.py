"""Fetching and caching the service binaries: Kafka jars through Maven, MinIO through Go."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from stockpipe.exceptions import DevStackError

#: MinIO as published on the Go module proxy (pinned for reproducible builds).
MINIO_MODULE = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")

Say = Callable[[str], None]


def require(program: str, purpose: str, hint: str) -> str:
    """The path of ``program`` or a clear error saying what needs it and how to get it."""
    found = shutil.which(program)
    if not found:
        raise DevStackError(f"{program} is not installed; it is needed to {purpose} ({hint})")
    return found


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], log: Path, what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False)
    if done.returncode != 0:
        reason = _first_error(log.read_text(errors="replace"))
        raise DevStackError(f"{what} failed (exit {done.returncode}): {reason} (full log: {log})")


def _first_error(text: str) -> str:
    """The line of a tool's log that says what went wrong: the first one naming an error (Maven's
    ``[ERROR] Failed to execute goal …``, Go's ``go: …: error``), else the last one."""
    plain = (" ".join(re.sub(r"\x1b\[[0-9;]*m", "", line).split()) for line in text.splitlines())
    lines = [line for line in plain if line.removeprefix("[ERROR]").strip()]
    for line in lines:
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line.removeprefix("[ERROR]").strip()
    return lines[-1] if lines else "no output"


def kafka_classpath(cache: Path, version: str, say: Say = print) -> str:
    """A Java classpath holding the Kafka broker and its runtime dependencies."""
    home = cache / f"kafka-{version}"
    libs = home / "libs"
    with _locked(cache / "locks" / f"kafka-{version}.lock"):
        if (home / ".complete").exists():
            return f"{libs}/*"
        java = require("java", "run the Kafka broker", "install OpenJDK 17")
        mvn = require("mvn", "fetch the Kafka broker jars from Maven Central", "apt-get install maven")
        del java
        say(f"fetching Apache Kafka {version} broker jars from Maven Central (once) ...")
        home.mkdir(parents=True, exist_ok=True)
        group, artifact, slf4j_version = SLF4J_BINDING
        (home / "pom.xml").write_text(
            f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>stockpipe.dev</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{slf4j_version}</version></dependency>
  </dependencies>
</project>
"""
        )
        if libs.exists():
            shutil.rmtree(libs)
        _run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            cache / "logs" / f"mvn-kafka-{version}.log",
            "resolving the Kafka jars with Maven",
            cwd=home,
        )
        (home / ".complete").write_text(version)
    return f"{libs}/*"


def minio_binary(cache: Path, say: Say = print) -> Path:
    """The MinIO server binary, built with ``go install`` on first use."""
    binary = cache / "bin" / "minio"
    with _locked(cache / "locks" / "minio.lock"):
        marker = cache / "bin" / ".minio-module"
        if binary.exists() and marker.exists() and marker.read_text() == MINIO_MODULE:
            return binary
        go = require("go", "build the MinIO S3 server", "install Go 1.24 or newer")
        say("building the MinIO S3 server with go install (once, a few minutes) ...")
        env = dict(os.environ, GOBIN=str(cache / "bin"), CGO_ENABLED="0", GOFLAGS="-trimpath")
        _run([go, "install", MINIO_MODULE], cache / "logs" / "go-install-minio.log", "building MinIO", env=env)
        marker.write_text(MINIO_MODULE)
    return binary
