"""How fast the `refunddesk` command answers: `cases list`, `queue` and `cases show` on a store of
1,000 cases, each a fresh process as an agent's shell starts it, against `python -c "import sqlite3"`
(the floor: an interpreter that starts and loads SQLite) timed in the same run, interleaved.

The store is made by bench/generate_cases.py (the real schema; real-shaped cases). Each command runs
--runs times after one warm-up run (the page cache, .pyc files); the figures are wall-clock times of
the whole process. Also printed: which heavy modules (the reader, dateparser, the mail parser, the
channels' libraries) a listing command loads (it should load none).

    python bench/cli_speed.py                  # 1,000 cases, 15 runs of each command
    python bench/cli_speed.py --cases 100000 --runs 30

Target (issue 20): each command under 0.3 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import _common as c
import generate_cases

TARGET = 0.300
REFUNDDESK = Path(c.PYTHON).with_name("refunddesk")  # the installed entry point, as agents run it
# Modules only the commands that read messages (or serve) may load.
HEAVY = (
    "dateparser", "refunddesk.policy.extract", "refunddesk.policy.dialog", "refunddesk.intake.pipeline",
    "refunddesk.intake.email.parse", "starlette", "uvicorn", "telegram", "jinja2", "aiosmtpd", "holidays.countries",
)


def wall(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode(errors='replace')}")
    return elapsed


def environments(folder: Path) -> dict[str, dict[str, str]]:
    """An installed package has its .pyc files; a sandbox with PYTHONDONTWRITEBYTECODE compiles every
    module of ours at each start. Both are timed; the cached .pyc go to the scratch folder, not the tree."""
    plain = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    return {
        "with .pyc (as installed)": {**plain, "PYTHONPYCACHEPREFIX": str(folder / "pycache")},
        "without .pyc (PYTHONDONTWRITEBYTECODE=1)": {**plain, "PYTHONDONTWRITEBYTECODE": "1"},
    }


def timed(argv: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, list[float]]:
    for command in argv.values():
        wall(command, env)  # warm-up: the page cache, and the .pyc files where they are written
    times: dict[str, list[float]] = {name: [] for name in argv}
    for _ in range(runs):  # interleaved, so a busy moment of the machine hits every command alike
        for name, command in argv.items():
            times[name].append(wall(command, env))
    return times


def loaded_by(config: Path, command: list[str]) -> list[str]:
    """The heavy modules a command's process has imported when it is done."""
    probe = (
        "import sys, json, contextlib, io\n"
        "from refunddesk.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()): main({['--config', str(config), *command]!r})\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([c.PYTHON, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="cases in the generated store (default 1,000)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default 15)")
    parser.add_argument("--keep", action="store_true", help="keep the generated store and print where it is")
    parser.add_argument("--program", default=str(REFUNDDESK),
                        help="the command to time (default: the installed refunddesk); e.g. 'python -m refunddesk.cli'"
                             " with PYTHONPATH set to another checkout, to compare")
    args = parser.parse_args()
    c.header("refunddesk CLI speed")

    folder = c.scratch("cli", keep=args.keep)
    config = c.write_config(folder / "refunddesk.toml", c.base_settings(folder))
    stats = generate_cases.generate(folder / "refunddesk.db", args.cases, quiet=True)
    first = f"RF-{1:06d}"
    print(f"store: {stats['cases']:,} cases ({stats['queued']} queued for review) in {folder}")

    commands = {
        "cases list": ["cases", "list"],
        "queue": ["queue"],
        f"cases show {first}": ["cases", "show", first],
    }
    floor = "python -c 'import sqlite3'"
    argv = {floor: [c.PYTHON, "-c", "import sqlite3"]}
    program = shlex.split(args.program)
    argv.update({name: [*program, "--config", str(config), *command] for name, command in commands.items()})
    met = True
    for mode, env in environments(folder).items():
        runs = timed(argv, env, args.runs)
        base = c.percentile(runs[floor], 50)
        print(f"\n{mode}: {args.runs} runs each")
        print(f"{'command':34}{'min ms':>10}{'median ms':>11}{'p90 ms':>10}{'x floor':>10}"
              f"  target {TARGET * 1000:.0f} ms")
        for name, times in runs.items():
            median = c.percentile(times, 50)
            verdict = ""
            if name != floor:
                verdict = c.verdict(median < TARGET)
                met &= median < TARGET or "without" in mode  # the target is for an installed package
            print(f"{name:34}{min(times) * 1000:10.0f}{median * 1000:11.0f}{c.percentile(times, 90) * 1000:10.0f}"
                  f"{median / base:10.1f}  {verdict}")

    print()
    for name, command in commands.items():
        heavy = loaded_by(config, command)
        print(f"heavy modules loaded by `{name}`: {', '.join(heavy) or 'none'}")
    print(f"\nall under {TARGET * 1000:.0f} ms (median, as installed): {c.verdict(met)}")


if __name__ == "__main__":
    main()
