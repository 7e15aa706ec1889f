"""Configuration for every stage, loaded as defaults < config.ini < environment < flags.

Each setting lives in a section (``[finnhub]``, ``[kafka]``, ...) and is reachable
three ways: the ``config.ini`` key ``[section] key``, the environment variable
``STOCKPIPE_<SECTION>_<KEY>`` and, on every command that uses the section, the
flag ``--key-with-dashes``. ``FINNHUB_API_KEY`` is accepted for the API key, as
are the standard ``AWS_*`` variables for S3 credentials. Errors name the key and
where its value came from.

Example:
    >>> from stockpipe.config import load_config
    >>> cfg = load_config(env={}, use_default_file=False)
    >>> cfg.kafka.topic
    'stock-data'
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import math
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stockpipe.exceptions import ConfigError
from stockpipe.settings import (
    ALIASES,
    SECTIONS,
    DevSettings,
    FinnhubSettings,
    GlueSettings,
    KafkaSettings,
    ProducerSettings,
    S3Settings,
    SimulatorSettings,
    SinkSettings,
    TransformSettings,
    WarehouseSettings,
)

__all__ = ["REDACTED", "Config", "load_config"]
"""The settings of each section are in :mod:`stockpipe.settings` (also importable from here)."""

REDACTED = "***"
# Shorter values are not scrubbed from free text: replacing every "k" would mangle the message
# and reveal the value anyway.
MIN_SCRUBBED_LEN = 4


@dataclass(kw_only=True)
class Config:
    """The effective configuration, one attribute per section."""

    finnhub: FinnhubSettings = field(default_factory=FinnhubSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    transform: TransformSettings = field(default_factory=TransformSettings)
    glue: GlueSettings = field(default_factory=GlueSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    simulate: SimulatorSettings = field(default_factory=SimulatorSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    #: ``(section, key)`` → where the value came from (``default``, ``config.ini``, ...).
    sources: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    #: ``(section, key)`` → the value :func:`load_config` left, to tell a value set later from Python.
    loaded: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    def source_of(self, section: str, key: str) -> str:
        """Where the current value of ``[section] key`` came from."""
        value = getattr(getattr(self, section), key)
        if (section, key) not in self.loaded:
            return self.sources.get((section, key), "Python")
        before = self.loaded[(section, key)]
        if before is not value and before != value:
            return "Python"
        return self.sources.get((section, key), "default")

    def section_json(self, section: str, *, only: tuple[str, ...] | None = None) -> str:
        """The section as JSON for the native core (secrets included: it never leaves the process)."""
        data = dataclasses.asdict(getattr(self, section))
        if only is not None:
            data = {k: v for k, v in data.items() if k in only}
        return json.dumps(data)

    def redacted(self) -> dict[str, dict[str, Any]]:
        """Every setting, with secrets replaced by ``***``."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            values: dict[str, Any] = {}
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if f.metadata.get("secret") and value:
                    value = REDACTED
                elif isinstance(value, str) and _uri_password(value):
                    value = value.replace(f":{_uri_password(value)}@", f":{REDACTED}@", 1)
                values[f.name] = value
            out[name] = values
        return out

    def secrets(self) -> list[str]:
        """Every secret value set, for scrubbing free text."""
        found: list[str] = []
        for name in SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if f.metadata.get("secret") and isinstance(value, str) and value:
                    found.append(value)
                elif isinstance(value, str) and (password := _uri_password(value)):
                    found.append(password)
        return found

    def scrub(self, text: str) -> str:
        """``text`` with every secret of at least ``MIN_SCRUBBED_LEN`` characters replaced by ``***``."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if len(secret) >= MIN_SCRUBBED_LEN:
                text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Config({self.redacted()!r})"


def fields_of(section: str) -> list[dataclasses.Field[Any]]:
    """The settings of a section, in declaration order."""
    return list(dataclasses.fields(SECTIONS[section]))


def flag_for(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a setting."""
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def env_name(section: str, key: str) -> str:
    return f"STOCKPIPE_{section.upper()}_{key.upper()}"


def env_names(section: str, key: str) -> list[str]:
    """Every environment variable that sets ``[section] key``: its own, then the well-known aliases
    (read first, so its own wins)."""
    return [env_name(section, key), *(name for name, target in ALIASES.items() if target == (section, key))]


def _type_name(f: dataclasses.Field[Any]) -> str:
    return str(f.type).replace("typing.", "")


def coerce(section: str, f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    """Converts a raw value (text from a file, env or flag) to the setting's type."""
    where = f"[{section}] {f.name} = {show_value(f, raw)} (from {source})"
    kind = _type_name(f)
    if raw is None:
        return None
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    optional = "None" in kind
    if optional and text == "":
        return None
    try:
        if kind.startswith("int"):
            return _whole(text)
        if kind.startswith("float"):
            return _finite(text)
        if kind.startswith("bool"):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind.startswith("list"):
            return [s.strip() for s in text.split(",") if s.strip()]
        if kind.startswith("dict"):
            pairs: dict[str, str] = {}
            for item in filter(None, (s.strip() for s in text.split(","))):
                key, sep, value = item.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"expected KEY=VALUE, got {item!r}")
                pairs[key.strip()] = value.strip()
            return pairs
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return text


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def show_value(f: dataclasses.Field[Any], raw: Any) -> str:
    if isinstance(raw, str) and (password := _uri_password(raw)):
        return repr(raw.replace(f":{password}@", f":{REDACTED}@", 1))
    return REDACTED if f.metadata.get("secret") and raw else repr(raw)


def _uri_password(value: str) -> str | None:
    """The password of a ``scheme://user:password@host`` value (a Redshift URI), if any."""
    if "://" not in value or "@" not in value:
        return None

    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


def default_config_file() -> Path | None:
    """``$STOCKPIPE_CONFIG`` or ``./config.ini`` when it exists."""
    explicit = os.environ.get("STOCKPIPE_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("config.ini")
    return local if local.exists() else None


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[tuple[str, str], Any] | None = None,
    use_default_file: bool = True,
) -> Config:
    """Builds the effective configuration.

    Args:
        config_file: an ini file; ``None`` uses ``$STOCKPIPE_CONFIG`` or ``./config.ini``.
        env: environment to read (defaults to ``os.environ``).
        flags: ``(section, key)`` → value given on the command line.
        use_default_file: look for ``./config.ini`` when ``config_file`` is None.

    Raises:
        ConfigError: naming the key and the source of any bad value.
    """
    env = os.environ if env is None else env
    cfg = Config()
    for section in SECTIONS:
        for f in fields_of(section):
            cfg.sources[(section, f.name)] = "default"

    path = Path(config_file) if config_file is not None else (default_config_file() if use_default_file else None)
    if path is not None:
        _apply_file(cfg, path)
    _apply_env(cfg, env)
    for (section, key), value in (flags or {}).items():
        if value is None:
            continue
        f = lookup_field(section, key, "command line")
        _set(cfg, section, f, coerce(section, f, value, f"flag {flag_for(f)}"), f"flag {flag_for(f)}")
    from stockpipe.checks import validate

    validate(cfg)
    cfg.loaded = {
        (section, f.name): _snapshot(getattr(getattr(cfg, section), f.name))
        for section in SECTIONS
        for f in fields_of(section)
    }
    return cfg


def _snapshot(value: Any) -> Any:
    """A copy of a list value, so that one changed in place later is seen as changed."""
    return list(value) if isinstance(value, list) else value


def lookup_field(section: str, key: str, source: str) -> dataclasses.Field[Any]:
    if section not in SECTIONS:
        known = ", ".join(SECTIONS)
        raise ConfigError(f"unknown section [{section}] (from {source}); known sections: {known}")
    for f in fields_of(section):
        if f.name == key:
            return f
    raise ConfigError(f"unknown key [{section}] {key} (from {source})")


def _set(cfg: Config, section: str, f: dataclasses.Field[Any], value: Any, source: str) -> None:
    setattr(getattr(cfg, section), f.name, value)
    cfg.sources[(section, f.name)] = source


def _apply_file(cfg: Config, path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.MissingSectionHeaderError as exc:
        line = exc.line.strip()
        raise ConfigError(f"config file {path}, line {exc.lineno}: {line!r} comes before any [section]") from None
    except configparser.ParsingError as exc:
        lineno = exc.errors[0][0]
        line = path.read_text(encoding="utf-8").splitlines()[lineno - 1].strip()
        raise ConfigError(f"config file {path}, line {lineno}: expected KEY = VALUE, got {line!r}") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(f"config file {path}, line {exc.lineno}: [{exc.section}] {exc.option} is set twice") from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"config file {path}, line {exc.lineno}: [{exc.section}] appears twice") from None
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {' '.join(str(exc).split())}") from None
    has_secret = False
    for section in parser.sections():
        for key, raw in parser.items(section):
            source = f"{path} [{section}]"
            f = lookup_field(section, key, str(path))
            has_secret = has_secret or bool(f.metadata.get("secret") and raw)
            _set(cfg, section, f, coerce(section, f, raw, source), str(path))
    if has_secret and sys.platform != "win32":
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            import logging

            logging.getLogger("stockpipe.config").warning(
                "%s holds a secret and is readable by other users; run: chmod 600 %s", path, path
            )


def _apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    for name, (section, key) in ALIASES.items():
        if env.get(name):
            f = lookup_field(section, key, name)
            _set(cfg, section, f, coerce(section, f, env[name], f"env {name}"), f"env {name}")
    for name, raw in env.items():
        if not name.startswith("STOCKPIPE_") or name == "STOCKPIPE_CONFIG":
            continue
        rest = name[len("STOCKPIPE_") :].lower()
        found = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if found is None:
            continue  # not a setting (e.g. a variable of another tool)
        section = found
        key = rest[len(section) + 1 :]
        f = lookup_field(section, key, f"env {name}")
        _set(cfg, section, f, coerce(section, f, raw, f"env {name}"), f"env {name}")
