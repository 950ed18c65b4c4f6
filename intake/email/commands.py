"""The e-mail channel's commands: `deliver` (an MTA hands over one message through a pipe) and
`import` (a mailbox of past refund mail). Both run the pipeline, so its reader and the mail parser
are imported in the handlers: no other command pays for them.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import uuid

from refunddesk.commandline import add_command, open_desk
from refunddesk.intake.budget import Budget
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

EX_TEMPFAIL = 75  # sendmail's "try again later": the MTA keeps the message and retries
EX_DATAERR = 65  # sendmail's "bad input": the MTA bounces the message to its sender with our reason


def register(commands: argparse._SubParsersAction) -> None:
    deliver = add_command(
        commands,
        "deliver",
        "read one RFC 5322 message on standard input and process it (an MTA's pipe)",
        "Prints the case id the message went to. Exit codes: 0 stored (also when it became a dead letter),\n"
        "75 (EX_TEMPFAIL) when it could not be stored, so the MTA keeps it and tries again,\n"
        "65 (EX_DATAERR) when its structure is refused (too many parts, nesting too deep, a header\n"
        "over 1 MB): nothing is stored and the MTA bounces it with the reason on standard error.\n\n"
        "example, a Postfix transport (master.cf):\n"
        "  refunddesk unix - n n - - pipe flags=Rq user=refunddesk argv=/usr/local/bin/refunddesk\n"
        "    deliver --sender ${sender} --recipient ${original_recipient}",
    )
    deliver.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="envelope recipient, e.g. refunds@example.com; repeat for several"
        " (default: $ORIGINAL_RECIPIENT, else $RECIPIENT)",
    )
    deliver.add_argument(
        "--sender",
        metavar="ADDRESS",
        help="envelope sender, e.g. customer@example.org; empty for a bounce (default: $SENDER)",
    )
    deliver.set_defaults(func=cmd_deliver)

    backlog = add_command(
        commands,
        "import",
        "import an mbox file or a Maildir of past refund mail",
        "Each message goes through the same pipeline as live mail, dated by when it arrived; mail imported\n"
        "before, or received already, makes no second case. Only cases still inside the policy's windows\n"
        "today are answered.\n\n"
        "example:\n  refunddesk import ~/Mail/refunds --no-reply",
    )
    backlog.add_argument("path", help="an mbox file, or a Maildir folder (with cur/ and new/)")
    backlog.add_argument(
        "--no-reply", action="store_true", help="answer none of the imported mail (the letters are kept as suppressed)"
    )
    backlog.set_defaults(func=cmd_import)


def cmd_deliver(args: argparse.Namespace) -> int:
    # The pipeline and the parser load the reader and dateparser (~0.8 s): only for mail.
    from refunddesk.intake import pipeline  # noqa: PLC0415
    from refunddesk.intake.email.body import MailRejected  # noqa: PLC0415
    from refunddesk.intake.email.parse import check_structure, mail_conversation  # noqa: PLC0415

    # Even an empty message is stored: it becomes a dead letter an agent can see, never a silent drop.
    raw = sys.stdin.buffer.read()
    from_environment = [r for r in (os.environ.get("ORIGINAL_RECIPIENT"), os.environ.get("RECIPIENT")) if r][:1]
    recipients = args.recipient or from_environment
    meta = {"source": "pipe", "rcpt_tos": recipients}
    if args.sender is not None or "SENDER" in os.environ:
        meta["mail_from"] = args.sender if args.sender is not None else os.environ["SENDER"]
    try:
        # Refused here, as the SMTP receiver refuses it in its DATA reply: the MTA bounces it to
        # its sender with the reason.
        check_structure(raw)
    except MailRejected as exc:
        print(f"refunddesk: message refused: {exc}", file=sys.stderr)
        return EX_DATAERR
    try:
        desk = open_desk(args)
        db = desk.open_db()
        conversation = mail_conversation(raw, meta)
        inbound_id, _ = spool.spool(db, "email", f"pipe:{uuid.uuid4()}", raw, utcnow(), meta, conversation)
    except (sqlite3.OperationalError, OSError) as exc:
        # Not stored: tell the MTA to keep the message and try again later.
        print(f"refunddesk: temporary failure, message not stored: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    pipeline.process(desk, db, inbound_id, budget=Budget(desk.config.worker.message_seconds))
    row = db.execute("SELECT status, case_id FROM inbound WHERE id = ?", [inbound_id]).fetchone()
    print(row[1] or f"inbound {inbound_id}: {row[0]}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    # The backlog import runs the pipeline: the reader and the mail parser load for it alone.
    from refunddesk.intake.email import backlog  # noqa: PLC0415

    return backlog.cmd_import(args)
