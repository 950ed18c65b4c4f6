"""What every `refunddesk` command shares: its parser, opening the desk, argument forms and one-line
user errors. The command modules (refunddesk/commands.py, intake/commands.py, intake/email/commands.py,
review/commands.py) import this module, never refunddesk/cli.py, which only assembles them.

Kept light on purpose: `cases list` must answer in a blink, so nothing here loads the reader, the
mail parser or a channel.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sqlite3
import sys
from datetime import date
from typing import Any, NoReturn

import sqlite_utils

from refunddesk.config import load
from refunddesk.desk import Desk

CASE_ID_FORM = "a case id such as RF-000001 (a refund) or AP-000001 (an appeal)"
DAY_FORM = "YYYY-MM-DD"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class UserError(Exception):
    """A mistake the user can fix; `refunddesk` prints it as one line and exits with 1."""


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong argument is one line on stderr with exit 1, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_command(commands: Any, name: str, summary: str, details: str = "") -> Parser:
    """A subcommand whose --help starts with `summary` (also its line in the parent's list)."""
    description = f"{summary[0].upper()}{summary[1:]}." + (f"\n\n{details}" if details else "")
    return commands.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text (a stable interface)")


def day(text: str) -> date:
    """An argparse type: a calendar day written YYYY-MM-DD."""
    try:
        if _DAY.fullmatch(text.strip()):
            return date.fromisoformat(text.strip())
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a date; write it {DAY_FORM}, e.g. 2026-01-31")


def case_id(text: str) -> str:
    """An argparse type: a case id, as the customer's letters show it (any case, spaces trimmed)."""
    return text.strip().upper()


def open_desk(args: argparse.Namespace) -> Desk:
    """The desk of the configuration the command names (see config.locate)."""
    config = load(args.config)
    try:
        return Desk.from_config(config)
    except ValueError as exc:  # a policy or calendar file of the operator's; the message names it
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot read {exc.filename or 'a file'} named in {config.source}: {exc.strerror}") from None


def opened(args: argparse.Namespace) -> tuple[Desk, sqlite_utils.Database]:
    """The desk and a connection to its store."""
    desk = open_desk(args)
    try:
        return desk, desk.open_db()
    except (OSError, sqlite3.Error) as exc:
        raise UserError(f"cannot open the store {desk.db_path} (store.path in {desk.config.source}): {exc}") from None


def fail(message: str) -> int:
    """Say what went wrong in one line on stderr; the command's exit code."""
    print(f"refunddesk: {message}", file=sys.stderr)
    return 1


def config_option(args: argparse.Namespace) -> str:
    """How to repeat the command's choice of configuration in a command we suggest."""
    return f" --config {shlex.quote(args.config)}" if args.config else ""
