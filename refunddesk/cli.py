"""The `refunddesk` command: a thin layer over the library, one function per subcommand.

Exit codes: 0 done, 1 a user error (named in the message), 75 (EX_TEMPFAIL) when `deliver`
could not store the message, so the MTA keeps it and retries.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sqlite3
import sys
import uuid
from importlib import resources
from pathlib import Path

from refunddesk.config import DEFAULT_CONFIG, ConfigError, load
from refunddesk.desk import Desk
from refunddesk.policy.model import KINDS, STATUSES
from refunddesk.policy.preset import PolicyError

EX_TEMPFAIL = 75
log = logging.getLogger("refunddesk")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refunddesk", description="Refund and appeal intake against a written refund policy.")
    parser.add_argument("--config", help=f"configuration file (default: $REFUNDDESK_CONFIG or ./{DEFAULT_CONFIG})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="write a configuration file (if none) and create the store")
    init.set_defaults(func=cmd_init)

    serve = commands.add_parser("serve", help="run the worker, the senders and every enabled channel")
    serve.set_defaults(func=cmd_serve)

    deliver = commands.add_parser("deliver", help="read one RFC 5322 message on standard input and process it (MTA pipe)")
    deliver.add_argument("--recipient", action="append", default=[], help="envelope recipient (default: $ORIGINAL_RECIPIENT)")
    deliver.add_argument("--sender", help="envelope sender (default: $SENDER)")
    deliver.set_defaults(func=cmd_deliver)

    cases = commands.add_parser("cases", help="list, show and decide cases").add_subparsers(dest="cases_command", required=True)
    listing = cases.add_parser("list", help="list cases")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--kind", choices=KINDS)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_cases_list)
    show = cases.add_parser("show", help="show one case")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_cases_show)

    dead = commands.add_parser("deadletters", help="messages that could not be processed").add_subparsers(dest="dead_command", required=True)
    dead_list = dead.add_parser("list", help="list dead letters")
    dead_list.add_argument("--json", action="store_true")
    dead_list.set_defaults(func=cmd_dead_list)
    dead_retry = dead.add_parser("retry", help="process a dead letter again")
    dead_retry.add_argument("id", type=int)
    dead_retry.set_defaults(func=cmd_dead_retry)

    for extension in extensions():
        extension.register(commands, cases)
    return parser


def extensions():
    """Command groups that live with their feature (review, import), registered if present."""
    found = []
    for name in ("refunddesk.review.commands", "refunddesk.intake.email.backlog"):
        try:
            module = __import__(name, fromlist=["register"])
        except ImportError:
            continue
        if hasattr(module, "register"):
            found.append(module)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args) or 0
    except (ConfigError, PolicyError) as exc:
        print(f"refunddesk: {exc}", file=sys.stderr)
        return 1


def open_desk(args) -> Desk:
    return Desk.from_config(load(args.config))


def cmd_init(args) -> int:
    target = Path(args.config or DEFAULT_CONFIG)
    if not target.exists():
        example = resources.files("refunddesk").joinpath("config.example.toml")
        shutil.copyfile(str(example), target)
        print(f"wrote {target}")
    desk = open_desk(argparse.Namespace(config=str(target)))
    desk.open_db().conn.close()
    desk.files.mkdir(parents=True, exist_ok=True)
    print(f"store ready at {desk.db_path}")
    return 0


def cmd_serve(args) -> int:
    from refunddesk.service import run

    return run(open_desk(args))


def cmd_deliver(args) -> int:
    import os

    from refunddesk.intake import pipeline
    from refunddesk.intake.budget import Budget
    from refunddesk.intake.email.parse import mail_conversation
    from refunddesk.store import spool
    from refunddesk.store.clock import utcnow

    # Even an empty message is stored: it becomes a dead letter an agent can see, never a silent drop.
    raw = sys.stdin.buffer.read()
    recipients = args.recipient or [r for r in (os.environ.get("ORIGINAL_RECIPIENT"), os.environ.get("RECIPIENT")) if r][:1]
    meta = {"source": "pipe", "rcpt_tos": recipients}
    if args.sender is not None or "SENDER" in os.environ:
        meta["mail_from"] = args.sender if args.sender is not None else os.environ["SENDER"]
    try:
        desk = open_desk(args)
        db = desk.open_db()
        inbound_id, _ = spool.spool(db, "email", f"pipe:{uuid.uuid4()}", raw, utcnow(), meta, mail_conversation(raw, meta))
    except (sqlite3.OperationalError, OSError) as exc:
        # Not stored: tell the MTA to keep the message and try again later.
        print(f"refunddesk: temporary failure, message not stored: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    pipeline.process(desk, db, inbound_id, budget=Budget(desk.config["worker.message_seconds"]))
    row = db.execute("SELECT status, case_id FROM inbound WHERE id = ?", [inbound_id]).fetchone()
    print(row[1] or f"inbound {inbound_id}: {row[0]}")
    return 0


def cmd_cases_list(args) -> int:
    from refunddesk.review.case_view import case_json
    from refunddesk.store import cases as case_store

    desk = open_desk(args)
    found = case_store.list_cases(desk.open_db(), status=args.status, kind=args.kind)
    if args.json:
        print(json.dumps([case_json(c) for c in found], ensure_ascii=False, indent=2))
        return 0
    for case in found:
        amount = f"{case.fields.get('amount', '')} {case.fields.get('currency') or ''}".strip()
        print(f"{case.id}  {case.kind:<6}  {case.status:<17}  {case.channel:<8}  {amount:<14}  {case.contact}")
    return 0


def cmd_cases_show(args) -> int:
    from refunddesk.review.case_view import case_detail_json
    from refunddesk.store import cases as case_store

    desk = open_desk(args)
    db = desk.open_db()
    case = case_store.load_case(db, args.id.upper())
    if case is None:
        print(f"refunddesk: no case {args.id}", file=sys.stderr)
        return 1
    data = case_detail_json(db, case)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    for key in ("id", "kind", "status", "channel", "contact", "amount", "currency", "incident_at", "created_at", "acknowledged_at", "review_due_at", "parent_id"):
        print(f"{key:>16}: {data[key] if data[key] is not None else ''}")
    print(f"{'description':>16}: {data['description'] or ''}")
    for finding in data["findings"]:
        print(f"{'finding':>16}: [{finding['clause']}] {'BLOCKING ' if finding['blocking'] else ''}{finding['message']}")
    for attachment in data["attachments"]:
        print(f"{'evidence':>16}: {attachment['filename']} ({attachment['content_type']}, {attachment['size']} bytes)")
    for message in data["messages"]:
        print(f"\n--- {message['direction']} {message['channel']} {message['at']} {message['subject']}\n{message['text']}")
    return 0


def cmd_dead_list(args) -> int:
    from refunddesk.store import spool

    rows = spool.dead_letters(open_desk(args).open_db())
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        print(f"{row['id']:>6}  {row['channel']:<8}  {row['received_at']}  {row['size']:>8} bytes  {row['error']}")
    return 0


def cmd_dead_retry(args) -> int:
    from refunddesk.intake import pipeline
    from refunddesk.intake.budget import Budget
    from refunddesk.store import spool

    desk = open_desk(args)
    db = desk.open_db()
    if not spool.requeue(db, args.id):
        print(f"refunddesk: inbound {args.id} is not a dead letter", file=sys.stderr)
        return 1
    # The budget of the configuration: a message that took too long needs a larger one (or the
    # cause fixed) before it is retried, or it is stopped again.
    status = pipeline.process(desk, db, args.id, budget=Budget(desk.config["worker.message_seconds"]))
    print(f"inbound {args.id}: {status}")
    return 0 if status != "dead" else 1


if __name__ == "__main__":
    sys.exit(main())
