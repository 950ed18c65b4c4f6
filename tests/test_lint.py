"""Lint and types of the package (issue 20): scripts/lint.sh, which runs ruff's lint and format
check and mypy with the configuration in pyproject.toml, finds nothing. Here so that the README's
test command fails on a finding; .ci/run also runs the script as a stage of its own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)  # mypy without its cache (a fresh clone) on a busy machine
def test_the_package_passes_ruff_and_mypy() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "lint.sh")], capture_output=True, text=True, timeout=280, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["lint: ruff check: ok", "lint: ruff format --check: ok", "lint: mypy: ok"]
