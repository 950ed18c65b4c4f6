"""Configuration: one TOML file, validated into frozen dataclasses when the service starts.

Code reads typed attributes, never string keys: `config.email.smtp_intake.port`, `config.store.path`.
Each TOML table is one dataclass below and each key one field, so a new key is one annotated field
with its default (and its line in config.example.toml; a test holds the two together). The field's
annotation is its rule: `bool`, `int`, `float` (an int is taken too), `str`, `Path`, `Path | None`,
`Literal[...]` (a choice), `tuple[str, ...]` (a TOML list of strings); a field whose type is another
dataclass is a nested table (`field(default_factory=Table)`). A key without a default is required;
a secret is `field(default="", repr=False, metadata=SECRET)`. Checks across keys go in check_across.

Paths are resolved when the file is read: a `Path` field holds the path relative to the config
file's folder (an absolute one as written), so `config.store.path` can be opened as it is. An
optional path (`Path | None`) left empty in the file is None.

Key names are a public interface (other tooling writes them): add keys, never rename them.
A secret (passwords, the bot token, the console's signing key) may come from the environment
instead of the file: `email.imap.password` is read from `REFUNDDESK_EMAIL_IMAP_PASSWORD`.
Secrets are never part of `repr()` or any log line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

ENV_CONFIG = "REFUNDDESK_CONFIG"
MAX_WORKERS = 16
DEFAULT_CONFIG = "refunddesk.toml"
T = TypeVar("T")


# A secret key's metadata: `field(default="", repr=False, metadata=SECRET)`. It may come from the
# environment and is never shown by repr().
SECRET = {"secret": True}


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    path: Path = Path("var/refunddesk.db")
    files: Path = Path("var/files")


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    processes: int = 1
    message_seconds: float = 30.0
    memory_mb: int = 2048  # each worker's data memory (RLIMIT_DATA); 0 = no limit


@dataclass(frozen=True, kw_only=True)
class PolicySettings:
    preset: Literal["302ai", "ipfixed"] = "302ai"
    file: Path | None = None
    calendar_overrides: Path | None = None


@dataclass(frozen=True, kw_only=True)
class SmtpIntakeSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2525
    max_message_bytes: int = 25 * 1024 * 1024
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_username: str = ""
    auth_password: str = field(default="", repr=False, metadata=SECRET)
    buffer_bytes: int = 64 * 1024 * 1024  # received mail in memory, all connections (intake/email/receiving.py)
    max_connections: int = 400
    max_connections_per_client: int = 50  # as Postfix's smtpd_client_connection_count_limit


@dataclass(frozen=True, kw_only=True)
class ImapSettings:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 993
    tls: bool = True
    username: str = ""
    password: str = field(default="", repr=False, metadata=SECRET)
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    poll_seconds: int = 60


@dataclass(frozen=True, kw_only=True)
class OutgoingSettings:
    host: str = ""
    port: int = 25
    starttls: bool = False
    username: str = ""
    password: str = field(default="", repr=False, metadata=SECRET)
    folder: Path = Path("var/outgoing")


@dataclass(frozen=True, kw_only=True)
class EmailSettings:
    refunds_address: str
    appeals_address: str
    from_name: str = ""
    auto_reply_limit: int = 5
    auto_reply_window_minutes: int = 60
    trusted_authserv_id: str = ""
    smtp_intake: SmtpIntakeSettings = field(default_factory=SmtpIntakeSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    outgoing: OutgoingSettings = field(default_factory=OutgoingSettings)


@dataclass(frozen=True, kw_only=True)
class TelegramSettings:
    enabled: bool = False
    token: str = field(default="", repr=False, metadata=SECRET)
    api_url: str = ""
    max_file_bytes: int = 20 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ConsoleSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8025
    secret_key: str = field(default="", repr=False, metadata=SECRET)
    https_only: bool = False  # the session cookie is Secure: set it when agents reach the console by HTTPS


@dataclass(frozen=True, kw_only=True)
class DeskSettings:
    """What concerns every channel at once."""

    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-For is believed (the console, the web channel)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Validated settings; `source` is the file they came from (not a key)."""

    store: StoreSettings = field(default_factory=StoreSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    email: EmailSettings
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    desk: DeskSettings = field(default_factory=DeskSettings)
    source: str = field(default="<code>", metadata={"key": False})


class ConfigError(ValueError):
    """The configuration is wrong; the message names the key and the file."""


# What a TOML value must be for each scalar annotation (a path is written as a string).
ACCEPTED: dict[Any, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (int, float), str: (str,), Path: (str,)}


def is_table(kind: Any) -> bool:
    return dataclasses.is_dataclass(kind)


def optional_of(kind: Any) -> Any:
    """X for `X | None`, else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def accepted(kind: Any) -> tuple[type, ...]:
    if typing.get_origin(kind) is Literal:
        return tuple(dict.fromkeys(type(choice) for choice in typing.get_args(kind)))
    if optional_of(kind) is not None:
        return accepted(optional_of(kind))
    if kind not in ACCEPTED:
        raise TypeError(f"no configuration rule for the annotation {kind!r}")
    return ACCEPTED[kind]


def list_item(kind: Any) -> Any:
    """X for `tuple[X, ...]` (a TOML list), else None."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def expected(kind: Any) -> str:
    item = list_item(kind)
    if item is not None:
        return f"a list of {expected(item)}"
    return "/".join(t.__name__ for t in accepted(kind))


def described(kind: Any, value: Any) -> str:
    """What a value that does not fit is, naming the wrong item of a list."""
    item = list_item(kind)
    if item is not None and isinstance(value, list):
        wrong = next(v for v in value if not fits(item, v))
        return f"a list holding {type(wrong).__name__} {wrong!r}"
    return type(value).__name__


def fits(kind: Any, value: Any) -> bool:
    item = list_item(kind)
    if item is not None:
        return isinstance(value, list) and all(fits(item, v) for v in value)
    allowed = accepted(kind)
    # bool is an int in Python; a port of `true` is a mistake worth naming.
    return isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)


def keys(kind: Any = Config, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Every key of the file as (dotted name, its field, its annotation), in the order of the tables."""
    hints = typing.get_type_hints(kind)
    for spec in dataclasses.fields(kind):
        if not spec.metadata.get("key", True):
            continue
        annotation = hints[spec.name]
        if is_table(annotation):
            yield from keys(annotation, f"{prefix}{spec.name}.")
        else:
            expected(annotation)  # an annotation without a rule fails at import, not in production
            yield f"{prefix}{spec.name}", spec, annotation


KEYS: tuple[str, ...] = tuple(name for name, _, _ in keys())


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


class Reader:
    """Reads one file's keys: the value from the environment (secrets), the file or the default."""

    def __init__(self, flat: dict[str, Any], source: str, environ: Mapping[str, str]) -> None:
        self.flat = flat
        self.source = source
        self.environ = environ
        self.folder = None if source.startswith("<") else Path(source).parent

    def table(self, kind: Any, prefix: str = "") -> Any:
        hints = typing.get_type_hints(kind)
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(kind):
            if not spec.metadata.get("key", True):
                continue
            annotation = hints[spec.name]
            key = f"{prefix}{spec.name}"
            if is_table(annotation):
                values[spec.name] = self.table(annotation, key + ".")
            else:
                values[spec.name] = self.value(key, spec, annotation)
        return kind(**values)

    def value(self, key: str, spec: dataclasses.Field, kind: Any) -> Any:
        if spec.metadata.get("secret") and self.environ.get(env_name(key)):
            return self.environ[env_name(key)]
        if key not in self.flat:
            if spec.default is dataclasses.MISSING:
                raise ConfigError(f"{self.source}: missing key {key!r}")
            return self.path(kind, spec.default) if isinstance(spec.default, Path) else spec.default
        value = self.flat[key]
        if not fits(kind, value):
            raise ConfigError(f"{self.source}: key {key!r} must be {expected(kind)}, not {described(kind, value)}")
        if typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
            choices = ", ".join(map(str, typing.get_args(kind)))
            raise ConfigError(f"{self.source}: key {key!r} must be one of {choices}, not {value!r}")
        if list_item(kind) is not None:
            return tuple(value)
        if kind is float:
            return float(value)
        if kind is Path or optional_of(kind) is Path:
            if not value and kind is Path:
                raise ConfigError(f"{self.source}: key {key!r} must name a file or folder, not ''")
            return self.path(kind, value) if value else None
        return value

    def path(self, kind: Any, value: str | Path) -> Path:
        path = Path(value)
        return path if path.is_absolute() or self.folder is None else self.folder / path


def check_across(config: Config, source: str) -> None:
    """The checks one key's type cannot express: ranges, forms and keys that need each other."""
    for key, address in (
        ("email.refunds_address", config.email.refunds_address),
        ("email.appeals_address", config.email.appeals_address),
    ):
        if "@" not in address or any(c in address for c in "\r\n <>"):
            raise ConfigError(f"{source}: key {key!r} must be a plain email address, not {address!r}")
    processes = config.worker.processes
    if not 1 <= processes <= MAX_WORKERS:
        raise ConfigError(f"{source}: key 'worker.processes' must be from 1 to {MAX_WORKERS}, not {processes}")
    seconds = config.worker.message_seconds
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(
            f"{source}: key 'worker.message_seconds' must be a number of seconds above 0, not {seconds!r}"
        )
    if config.telegram.enabled and not config.telegram.token:
        variable = env_name("telegram.token")
        raise ConfigError(f"{source}: telegram.enabled is true but 'telegram.token' is empty (set it or {variable})")
    if config.email.imap.enabled and not config.email.imap.username:
        raise ConfigError(f"{source}: email.imap.enabled is true but 'email.imap.username' is empty")


def parse(kind: type[T], raw: dict[str, Any], source: str, environ: Mapping[str, str] | None = None) -> T:
    """The dataclass `kind` read from a parsed TOML table, each key checked against its annotation."""
    flat = flatten(raw)
    unknown = sorted(set(flat) - {name for name, _, _ in keys(kind)})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (check the spelling against config.example.toml)")
    return Reader(flat, source, os.environ if environ is None else environ).table(kind)


def validate(raw: dict[str, Any], source: str, environ: Mapping[str, str] | None = None) -> Config:
    """The settings of a parsed TOML table, checked; paths relative to `source`'s folder."""
    config = dataclasses.replace(parse(Config, raw, source, environ), source=source)
    check_across(config, source)
    return config


def locate(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file every command uses: the one named (--config), else $REFUNDDESK_CONFIG,
    else ./refunddesk.toml."""
    env = os.environ if environ is None else environ
    return Path(path or env.get(ENV_CONFIG) or DEFAULT_CONFIG)


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    chosen = locate(path, env)
    try:
        raw = tomllib.loads(chosen.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{chosen}: no such configuration file (run `refunddesk init` to create one)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from exc
    return validate(raw, str(chosen), env)
