"""The package builds as scripts/setup.sh installs it: no warning of the project's making, and every
data file (policy presets, letter and console templates) inside the wheel.

Built with pip from a copy of the working tree, so the build leaves nothing in the repository.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__")
# Folders of data the service reads through importlib.resources, and where the wheel keeps them.
DATA_FOLDERS = {
    "policy/presets": "refunddesk/policy/presets",
    "templates/console": "refunddesk/templates/console",
    "templates/en": "refunddesk/templates/en",
    "templates/zh": "refunddesk/templates/zh",
}


def build_wheel(tmp_path: Path) -> tuple[str, Path]:
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    out = tmp_path / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    (wheel,) = out.glob("refunddesk-*.whl")
    return output, wheel


def test_wheel_builds_without_warnings_and_ships_every_data_file(tmp_path: Path) -> None:
    output, wheel = build_wheel(tmp_path)
    lowered = output.lower()
    for warning in ("deprecated", "would be ignored", "absent from the `packages` configuration"):
        assert warning not in lowered, output

    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"refunddesk/config.example.toml"}
    for folder, inside in DATA_FOLDERS.items():
        files = [p for p in (REPO / folder).iterdir() if p.is_file() and p.suffix != ".pyc"]
        assert files, folder
        expected.update(f"{inside}/{p.name}" for p in files)
    assert expected <= names, sorted(expected - names)

    metadata = zipfile.ZipFile(wheel).read("refunddesk-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata.splitlines()
