"""Configuration: one TOML file, validated against a schema when the service starts.

Key names are a public interface (other tooling writes them): add keys, never rename them.
A secret (passwords, the bot token, the console's signing key) may come from the environment
instead of the file: `email.imap.password` is read from `REFUNDDESK_EMAIL_IMAP_PASSWORD`.
Secrets are never part of `repr()` or any log line.
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_CONFIG = "REFUNDDESK_CONFIG"
MAX_WORKERS = 16
DEFAULT_CONFIG = "refunddesk.toml"


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    secret: bool = False
    choices: tuple[Any, ...] = ()


SCHEMA: dict[str, Key] = {
    "store.path": Key(str, "var/refunddesk.db"),
    "store.files": Key(str, "var/files"),
    "worker.processes": Key(int, 1),
    "worker.message_seconds": Key((int, float), 30),
    "policy.preset": Key(str, "302ai", choices=("302ai", "ipfixed")),
    "policy.file": Key(str, ""),
    "policy.calendar_overrides": Key(str, ""),
    "email.refunds_address": Key(str, required=True),
    "email.appeals_address": Key(str, required=True),
    "email.from_name": Key(str, ""),
    "email.auto_reply_limit": Key(int, 5),
    "email.auto_reply_window_minutes": Key(int, 60),
    "email.trusted_authserv_id": Key(str, ""),
    "email.smtp_intake.enabled": Key(bool, True),
    "email.smtp_intake.host": Key(str, "127.0.0.1"),
    "email.smtp_intake.port": Key(int, 2525),
    "email.smtp_intake.max_message_bytes": Key(int, 25 * 1024 * 1024),
    "email.smtp_intake.tls_cert": Key(str, ""),
    "email.smtp_intake.tls_key": Key(str, ""),
    "email.smtp_intake.auth_username": Key(str, ""),
    "email.smtp_intake.auth_password": Key(str, "", secret=True),
    "email.imap.enabled": Key(bool, False),
    "email.imap.host": Key(str, "127.0.0.1"),
    "email.imap.port": Key(int, 993),
    "email.imap.tls": Key(bool, True),
    "email.imap.username": Key(str, ""),
    "email.imap.password": Key(str, "", secret=True),
    "email.imap.folder": Key(str, "INBOX"),
    "email.imap.processed_folder": Key(str, "Processed"),
    "email.imap.poll_seconds": Key(int, 60),
    "email.outgoing.host": Key(str, ""),
    "email.outgoing.port": Key(int, 25),
    "email.outgoing.starttls": Key(bool, False),
    "email.outgoing.username": Key(str, ""),
    "email.outgoing.password": Key(str, "", secret=True),
    "email.outgoing.folder": Key(str, "var/outgoing"),
    "telegram.enabled": Key(bool, False),
    "telegram.token": Key(str, "", secret=True),
    "telegram.api_url": Key(str, ""),
    "telegram.max_file_bytes": Key(int, 20 * 1024 * 1024),
    "console.enabled": Key(bool, True),
    "console.host": Key(str, "127.0.0.1"),
    "console.port": Key(int, 8025),
    "console.secret_key": Key(str, "", secret=True),
}


class ConfigError(ValueError):
    """The configuration is wrong; the message names the key and the file."""


class Config:
    """Validated settings, read with dotted keys: `config["email.imap.host"]`."""

    def __init__(self, values: dict[str, Any], source: str) -> None:
        self._values = values
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def section(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) + 1 :]: v for k, v in self._values.items() if k.startswith(prefix + ".")}

    def path(self, key: str) -> Path:
        """A path setting, relative to the config file's folder when not absolute."""
        value = Path(self._values[key])
        if value.is_absolute() or self.source.startswith("<"):
            return value
        return Path(self.source).parent / value

    def __repr__(self) -> str:
        shown = {k: ("***" if SCHEMA[k].secret and v else v) for k, v in self._values.items()}
        return f"Config({self.source!r}, {shown!r})"


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def env_name(key: str) -> str:
    return "REFUNDDESK_" + key.replace(".", "_").upper()


def validate(raw: dict[str, Any], source: str, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    flat = flatten(raw)
    unknown = sorted(set(flat) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (check the spelling against config.example.toml)")
    values: dict[str, Any] = {}
    for key, spec in SCHEMA.items():
        if spec.secret and environ.get(env_name(key)):
            values[key] = environ[env_name(key)]
            continue
        if key not in flat:
            if spec.required:
                raise ConfigError(f"{source}: missing key {key!r}")
            values[key] = spec.default
            continue
        value = flat[key]
        # bool is an int in Python; a port of `true` is a mistake worth naming.
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        if not isinstance(value, spec.type) or (isinstance(value, bool) and bool not in types):
            expected = spec.type.__name__ if isinstance(spec.type, type) else "/".join(t.__name__ for t in spec.type)
            raise ConfigError(f"{source}: key {key!r} must be {expected}, not {type(value).__name__}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{source}: key {key!r} must be one of {', '.join(map(str, spec.choices))}, not {value!r}")
        values[key] = value
    for key in ("email.refunds_address", "email.appeals_address"):
        if "@" not in values[key] or any(c in values[key] for c in "\r\n <>"):
            raise ConfigError(f"{source}: key {key!r} must be a plain email address, not {values[key]!r}")
    if not 1 <= values["worker.processes"] <= MAX_WORKERS:
        raise ConfigError(f"{source}: key 'worker.processes' must be from 1 to {MAX_WORKERS}, not {values['worker.processes']}")
    seconds = values["worker.message_seconds"]
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{source}: key 'worker.message_seconds' must be a number of seconds above 0, not {seconds!r}")
    values["worker.message_seconds"] = float(seconds)
    if values["telegram.enabled"] and not values["telegram.token"]:
        raise ConfigError(f"{source}: telegram.enabled is true but 'telegram.token' is empty (set it or {env_name('telegram.token')})")
    if values["email.imap.enabled"] and not values["email.imap.username"]:
        raise ConfigError(f"{source}: email.imap.enabled is true but 'email.imap.username' is empty")
    return Config(values, source)


def load(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    chosen = Path(path or env.get(ENV_CONFIG) or DEFAULT_CONFIG)
    try:
        raw = tomllib.loads(chosen.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{chosen}: no such configuration file (run `refunddesk init` to create one)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from exc
    return validate(raw, str(chosen), dict(env))
