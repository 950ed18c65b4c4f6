"""Running the real `refunddesk serve` in a subprocess for end-to-end tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import wait_for_port


class Served:
    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, wait_ports: tuple[int, ...] = (), blocked_signals: frozenset[int] = frozenset()) -> "Served":
        """`blocked_signals`: masked in serve and so in its worker (a signal mask survives fork and
        exec), as a C library that masks them in its thread would leave them."""
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "refunddesk.cli", "--config", str(self.config), "serve"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=(lambda: signal.pthread_sigmask(signal.SIG_BLOCK, blocked_signals)) if blocked_signals else None,
        )
        for port in wait_ports:
            wait_port_or_fail(self, port)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        self.log.close()
        self.process = None
        return code

    def output(self) -> str:
        return self.log_path.read_text("utf-8", "replace")


def wait_port_or_fail(served: Served, port: int) -> None:
    try:
        wait_for_port(port, timeout=20)
    except AssertionError:
        raise AssertionError(f"serve did not open port {port}:\n{served.output()[-3000:]}")
