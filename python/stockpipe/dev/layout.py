"""Where one stack lives under ``[dev] home``, and the secrets it generates once."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stockpipe.settings import DevSettings

STATE_FILE = "stack.json"


@dataclass
class Layout:
    """Where everything of one stack lives."""

    home: Path

    @classmethod
    def of(cls, dev: DevSettings) -> Layout:
        return cls(Path(dev.home).expanduser().resolve())

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

    def secrets(self) -> dict[str, str]:
        """The stack's generated secrets, made once per home (mode 600)."""
        path = self.home / "credentials.json"
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
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data))
            path.chmod(0o600)
        return data
