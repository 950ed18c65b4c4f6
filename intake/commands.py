"""`refunddesk deadletters`: the messages intake stored but could not make a case of, kept with
their raw bytes for an agent to look at and, once the cause is gone, to process again.
"""

from __future__ import annotations

import argparse
import json

from refunddesk.commandline import add_command, add_json_option, fail, open_desk, opened
from refunddesk.intake.budget import Budget
from refunddesk.store import spool


def register(commands: argparse._SubParsersAction) -> None:
    dead = add_command(
        commands,
        "deadletters",
        "messages that could not be processed, kept with their raw bytes",
        "A message becomes a dead letter when it cannot be read (broken MIME, no sender), when reading it\n"
        "takes longer than worker.message_seconds, or when processing fails. Nothing is dropped.",
    ).add_subparsers(dest="dead_command", required=True, metavar="COMMAND", help="one of:")

    listing = add_command(dead, "list", "list dead letters: id, channel, when received, size and the error")
    add_json_option(listing)
    listing.set_defaults(func=cmd_dead_list)

    retry = add_command(
        dead,
        "retry",
        "process a dead letter again, with the configured time budget",
        "example:\n  refunddesk deadletters retry 42",
    )
    retry.add_argument("id", type=int, help="the dead letter's number, as `refunddesk deadletters list` shows it")
    retry.set_defaults(func=cmd_dead_retry)


def cmd_dead_list(args: argparse.Namespace) -> int:
    rows = spool.dead_letters(open_desk(args).open_db())
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        print(f"{row['id']:>6}  {row['channel']:<8}  {row['received_at']}  {row['size']:>8} bytes  {row['error']}")
    if not rows:
        print("no dead letters")
    return 0


def cmd_dead_retry(args: argparse.Namespace) -> int:
    # The pipeline loads the reader and the mail parser; only this command and `deliver` need them.
    from refunddesk.intake import pipeline  # noqa: PLC0415

    desk, db = opened(args)
    if not spool.requeue(db, args.id):
        return fail(f"inbound {args.id} is not a dead letter (see `refunddesk deadletters list`)")
    # The budget of the configuration: a message that took too long needs a larger one (or the
    # cause fixed) before it is retried, or it is stopped again.
    status = pipeline.process(desk, db, args.id, budget=Budget(desk.config.worker.message_seconds))
    print(f"inbound {args.id}: {status}")
    return 0 if status != "dead" else 1
