"""Shared fixtures: a real configuration file, a real SQLite store, free loopback ports.

Nothing here mocks our code: tests build a Desk from a TOML file exactly as `serve` does.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from refunddesk.config import load
from refunddesk.desk import Desk
from refunddesk.review.agents import add as add_agent
from refunddesk.store.clock import utcnow

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "corpus"  # see its README: where it comes from, its licence
CORPUS_MAILS = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name not in ("LICENSE", "README.md"))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    """Write a config from dotted keys: {"email.imap.host": "127.0.0.1", ...}."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section, {})[name] = value
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{name} = {toml_value(value)}" for name, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), "utf-8")
    return path


def base_settings(tmp: Path, **overrides: Any) -> dict[str, Any]:
    settings = {
        "store.path": str(tmp / "refunddesk.db"),
        "store.files": str(tmp / "files"),
        "policy.preset": "302ai",
        "email.refunds_address": "refunds@desk.test",
        "email.appeals_address": "appeals@desk.test",
        "email.smtp_intake.enabled": False,
        "email.smtp_intake.port": free_port(),
        "email.outgoing.folder": str(tmp / "outgoing"),
        "console.enabled": False,
        "console.port": free_port(),
    }
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    return settings


@pytest.fixture
def make_desk(tmp_path: Path) -> Callable[..., Desk]:
    """make_desk(**{"policy.preset": "ipfixed"}) -> a Desk on a fresh store in tmp_path."""

    def build(**overrides: Any) -> Desk:
        path = write_config(tmp_path / "refunddesk.toml", base_settings(tmp_path, **overrides))
        return Desk.from_config(load(path, environ={}))

    return build


@pytest.fixture
def desk(make_desk) -> Desk:
    return make_desk()


@pytest.fixture
def db(desk):
    database = desk.open_db()
    yield database
    database.conn.close()


def add_agents(db, *names: str) -> None:
    """Register agents as `refunddesk agents add` does: the CLI's decisions need a registered agent."""
    for name in names:
        add_agent(db, name, f"{name}-password", utcnow(), "test")


def run_cli(config: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real `refunddesk` command as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "refunddesk.cli", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, message: str = "condition") -> Any:
    """Poll a condition until it holds or the deadline passes (never a bare sleep in a test)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    def open_() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(open_, timeout, message=f"port {port}")
