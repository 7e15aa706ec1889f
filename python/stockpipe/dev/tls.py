"""Certificates for the dev stack's TLS listeners, made with the ``openssl`` command line.

One CA per stack home and one broker certificate valid for ``localhost`` and ``127.0.0.1`` (as an
IP address for Java's hostname check, and as a DNS name for OpenSSL's, which librdkafka uses).
Brokers read a PKCS#12 keystore and the CA as a PEM truststore; clients need only ``ca.pem``.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stockpipe.dev import tools
from stockpipe.exceptions import DevStackError

SUBJECT_ALT_NAMES = "DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1"


@dataclass(frozen=True)
class Material:
    """Paths and passwords of one stack's TLS material."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def password_file(self) -> Path:
        return self.directory / "keystore-password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()


def _openssl(*args: str, cwd: Path) -> None:
    binary = tools.require("openssl", "make the dev stack's TLS certificates", "install openssl")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DevStackError(f"openssl {args[0]} failed: {done.stderr.strip()[-400:]}")


def make_ca(directory: Path, name: str = "stockpipe dev CA") -> tuple[Path, Path]:
    """A self-signed CA: returns ``(ca.pem, ca.key)`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", f"/CN={name}",
        "-keyout", key.name, "-out", cert.name,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def ensure(directory: Path) -> Material:
    """Creates the CA and the broker keystore once; later calls reuse them."""
    material = Material(directory)
    if material.keystore.exists() and material.ca.exists() and material.password_file.exists():
        return material
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    make_ca(directory)
    (directory / "broker.ext").write_text(
        f"subjectAltName={SUBJECT_ALT_NAMES}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "broker.key", "-out", "broker.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "825", "-sha256", "-extfile", "broker.ext", "-out", "broker.pem", cwd=directory,
    )  # fmt: skip
    password = secrets.token_urlsafe(18)
    material.password_file.write_text(password)
    material.password_file.chmod(0o600)
    _openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "broker", "-out", "broker.p12", "-passout", f"file:{material.password_file.name}",
        cwd=directory,
    )  # fmt: skip
    for secret in ("broker.key", "broker.p12"):
        (directory / secret).chmod(0o600)
    return material
