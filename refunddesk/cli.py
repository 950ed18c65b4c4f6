"""The `refunddesk` command: every command group registered here, explicitly, from the room it
belongs to; each group's handlers live in that room's `commands` module.

Exit codes: 0 done, 1 a user error (one line on stderr, named in the message), 75 (EX_TEMPFAIL)
when `deliver` could not store the message, so the MTA keeps it and retries.

The command modules import only what listing and showing cases need; a handler that reads
messages (deliver, import, deadletters retry, the decisions) imports the reader itself.
"""

from __future__ import annotations

import argparse
import logging
import sys

from refunddesk import commands as desk_commands
from refunddesk.commandline import Parser, UserError
from refunddesk.config import DEFAULT_CONFIG, ENV_CONFIG, ConfigError
from refunddesk.intake import commands as intake_commands
from refunddesk.intake.email import commands as email_commands
from refunddesk.policy.preset import PolicyError
from refunddesk.review import commands as review_commands

GROUPS = (desk_commands, email_commands, intake_commands, review_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="refunddesk",
        description="Refund and appeal intake against a written refund policy: mail, IMAP and Telegram in,\n"
        "a review queue and a console for agents, letters out.",
        epilog="Start with `refunddesk init`, then `refunddesk agents add NAME` and `refunddesk serve`.\n"
        "Every command has its own --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="FILE", help=f"the configuration file (default: ${ENV_CONFIG}, else ./{DEFAULT_CONFIG})"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail on standard error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args) or 0
    except (ConfigError, PolicyError, UserError) as exc:
        print(f"refunddesk: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
