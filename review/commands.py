"""The agents' commands: decide cases, work the queue, read the SLA report, manage console
accounts and export statements. Registered by `refunddesk/cli.py` when this module is present.

The acting agent is `--agent`, else $REFUNDDESK_AGENT, else the operating-system user: every
decision in the event log names a person. Nothing here edits or deletes a record.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import date
from pathlib import Path

from refunddesk.policy.model import CHANNELS, KINDS, STATUSES
from refunddesk.store.clock import utcnow


def register(commands, cases) -> None:
    approve = cases.add_parser("approve", help="approve a refund (the letter goes to the customer)")
    approve.add_argument("id")
    approve.add_argument("--amount", required=True, help="the refund, at most the requested amount (P302-13, PIF-5)")
    approve.add_argument("--note", default="", help="a note to the customer, quoted in the letter")
    add_agent_option(approve)
    approve.set_defaults(func=cmd_approve)

    reject = cases.add_parser("reject", help="reject a request with one of the policy's reasons")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True, help="a reason code of the policy (see `refunddesk cases reasons`)")
    reject.add_argument("--note", default="", help="the specific reason in your words, quoted in the letter")
    add_agent_option(reject)
    reject.set_defaults(func=cmd_reject)

    ask = cases.add_parser("request-info", help="ask the customer for more; their answer puts the case back in the queue")
    ask.add_argument("id")
    ask.add_argument("--message", required=True)
    add_agent_option(ask)
    ask.set_defaults(func=cmd_request_info)

    special = cases.add_parser("flag", help="set the special-consideration flags of a case (PIF-9; no automatic effect)")
    special.add_argument("id")
    special.add_argument("--special", action="append", default=[], help="a flag; repeat for several; none clears them")
    add_agent_option(special)
    special.set_defaults(func=cmd_flag)

    reasons = cases.add_parser("reasons", help="list the policy's reject reasons with their clauses")
    reasons.set_defaults(func=cmd_reasons)

    queue = commands.add_parser("queue", help="cases waiting for review, most urgent first")
    queue.add_argument("--status", choices=[*STATUSES, "all"], default="queued")
    queue.add_argument("--kind", choices=KINDS)
    queue.add_argument("--channel", choices=CHANNELS)
    queue.add_argument("--agent", help="only cases this agent decided or acted on")
    queue.add_argument("--search", help="words in descriptions and messages (Chinese too)")
    queue.add_argument("--json", action="store_true")
    queue.set_defaults(func=cmd_queue)

    sla = commands.add_parser("sla", help="acknowledgement and review times against the policy's promises")
    sla.add_argument("--days", type=int, default=30, help="cases created in the last N days (default 30)")
    sla.add_argument("--json", action="store_true")
    sla.set_defaults(func=cmd_sla)

    agents = commands.add_parser("agents", help="console accounts").add_subparsers(dest="agents_command", required=True)
    add = agents.add_parser("add", help="create an agent; the password is read from standard input or a prompt")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of standard input")
    add.set_defaults(func=cmd_agents_add)
    listing = agents.add_parser("list", help="list agents")
    listing.set_defaults(func=cmd_agents_list)
    for verb, disabled in (("disable", True), ("enable", False)):
        toggle = agents.add_parser(verb, help=f"{verb} an agent's console login (accounts are never deleted)")
        toggle.add_argument("name")
        toggle.set_defaults(func=cmd_agents_toggle, disabled=disabled)

    export = commands.add_parser("export", help="refund statements as CSV for a period (PIF-10)")
    export.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="first day, YYYY-MM-DD (policy time zone)")
    export.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last day, YYYY-MM-DD, included")
    export.add_argument("--output", help="write to this file instead of standard output")
    export.set_defaults(func=cmd_export)


def add_agent_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", help="the acting agent (default: $REFUNDDESK_AGENT or the OS user)")


def acting_agent(args) -> str:
    return args.agent or os.environ.get("REFUNDDESK_AGENT") or getpass.getuser()


def fail(message: str) -> int:
    print(f"refunddesk: {message}", file=sys.stderr)
    return 1


def opened(args):
    from refunddesk.cli import open_desk

    desk = open_desk(args)
    return desk, desk.open_db()


# --- decisions -----------------------------------------------------------------------------------


def decide(args, action) -> int:
    from .decisions import DecisionError

    desk, db = opened(args)
    try:
        done = action(desk, db)
    except DecisionError as exc:
        return fail(str(exc))
    case = done.case
    print(f"{case.id} {case.status} by {acting_agent(args)}; letter to the customer queued (outbox {done.outbox_id}, {case.channel})")
    return 0


def cmd_approve(args) -> int:
    from .decisions import approve

    return decide(args, lambda desk, db: approve(desk, db, args.id, acting_agent(args), args.amount, args.note))


def cmd_reject(args) -> int:
    from .decisions import reject

    return decide(args, lambda desk, db: reject(desk, db, args.id, acting_agent(args), args.reason, args.note))


def cmd_request_info(args) -> int:
    from .decisions import request_info

    return decide(args, lambda desk, db: request_info(desk, db, args.id, acting_agent(args), args.message))


def cmd_flag(args) -> int:
    from .decisions import DecisionError, set_special_flags, version_of
    from refunddesk.store.cases import load_case

    desk, db = opened(args)
    case = load_case(db, args.id.upper())
    if case is None:
        return fail(f"no case {args.id}")
    allowed = list(version_of(desk, case).special.get("flags", ()))
    try:
        chosen = set_special_flags(db, case.id, acting_agent(args), args.special, allowed)
    except DecisionError as exc:
        return fail(str(exc))
    print(f"{case.id}: special consideration: {', '.join(chosen) or 'none'}")
    return 0


def cmd_reasons(args) -> int:
    desk, _ = opened(args)
    for code, clause in desk.policy.versions[-1].reject_reasons.items():
        print(f"{code:<24} {clause}")
    return 0


# --- the queue and the SLA report ----------------------------------------------------------------


def cmd_queue(args) -> int:
    from .queue import Filters, due_text, list_queue

    desk, db = opened(args)
    now = utcnow()
    filters = Filters(None if args.status == "all" else args.status, args.kind, args.channel, args.agent, args.search)
    items = list_queue(desk, db, now, filters)
    if args.json:
        print(json.dumps([item.to_dict() for item in items], ensure_ascii=False, indent=2))
        return 0
    for item in items:
        amount = f"{item.amount or '-'} {item.currency or ''}".strip()
        marks = " ".join(m for m in ("OVERDUE" if item.overdue else "", "due-soon" if item.due_soon else "", "ACK-AT-RISK" if "ack_at_risk" in item.flags.get("sla", {}) else "") if m)
        print(f"{item.id}  {item.kind:<6}  {item.status:<17}  {item.channel:<8}  {amount:<14}  age {item.age_hours:6.1f} h  due {due_text(item, now):<16}  {marks}")
        for finding in item.blocking:
            print(f"    blocking [{finding['clause']}] {finding['message']}")
        if item.suggestion and item.suggestion["basis"] not in ("requested", "unknown"):
            print(f"    suggested {item.suggestion['amount']} {item.suggestion['currency']} ({item.suggestion['clause']}): " + " ".join(item.suggestion["steps"]))
        if item.parent_decided_by:
            print(f"    appeal of {item.parent_id}, decided by {item.parent_decided_by}: another agent decides this one")
    if not items:
        print("the queue is empty")
    return 0


def cmd_sla(args) -> int:
    from .sla_report import report

    desk, db = opened(args)
    result = report(desk, db, utcnow(), args.days)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"cases created since {result.since[:10]}: {result.cases}")
    for title, tally, limit in (
        ("acknowledged", result.acknowledgement, f"within {result.ack_limit_hours:g} h"),
        ("reviewed", result.review, "by the review due date"),
    ):
        percent = "n/a" if tally.percent is None else f"{tally.percent}%"
        print(f"{title} {limit}: {percent}  (on time {tally.on_time}, late {tally.late}, missed {tally.missed}, still open {tally.pending}; median {tally.median_hours if tally.median_hours is not None else '-'} h)")
    if result.open_overdue:
        print(f"overdue in the queue: {', '.join(result.open_overdue)}")
    return 0


# --- agents and export ---------------------------------------------------------------------------


def cmd_agents_add(args) -> int:
    from .agents import AgentError, add

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            return fail("the passwords differ")
    else:
        return fail("no terminal to ask for the password; use --password-stdin")
    _, db = opened(args)
    try:
        add(db, args.name, password, utcnow(), os.environ.get("REFUNDDESK_AGENT") or getpass.getuser())
    except AgentError as exc:
        return fail(str(exc))
    print(f"agent {args.name} added")
    return 0


def cmd_agents_list(args) -> int:
    from .agents import listing

    _, db = opened(args)
    for row in listing(db):
        print(f"{row['name']:<32} {'disabled' if row['disabled'] else 'active':<8}  since {row['created_at'][:10]}")
    return 0


def cmd_agents_toggle(args) -> int:
    from .agents import AgentError, set_disabled

    _, db = opened(args)
    try:
        set_disabled(db, args.name, args.disabled, utcnow(), os.environ.get("REFUNDDESK_AGENT") or getpass.getuser())
    except AgentError as exc:
        return fail(str(exc))
    print(f"agent {args.name} {'disabled' if args.disabled else 'enabled'}")
    return 0


def cmd_export(args) -> int:
    from .export import statement_rows, to_csv

    desk, db = opened(args)
    try:
        text = to_csv(statement_rows(desk, db, args.first, args.last))
    except ValueError as exc:
        return fail(str(exc))
    if args.output:
        Path(args.output).write_text(text, "utf-8", newline="")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
