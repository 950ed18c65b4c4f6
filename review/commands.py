"""The agents' commands: read and decide cases, work the queue, read the SLA report, manage console
accounts and export statements. refunddesk/cli.py registers them with `register`.

Decisions (approve, reject, request-info) and flags are taken by a registered, enabled agent:
`--agent`, else $REFUNDDESK_AGENT, else the operating-system user, so every decision in the event
log names a person who has an account. Nothing here edits or deletes a record.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

import sqlite_utils

from refunddesk.commandline import (
    CASE_ID_FORM,
    DAY_FORM,
    UserError,
    add_command,
    add_json_option,
    case_id,
    day,
    fail,
    opened,
)
from refunddesk.policy.model import CHANNELS, KINDS, STATUSES
from refunddesk.store import cases as case_store
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

from .agents import MIN_PASSWORD, AgentError, account, add, listing, set_disabled
from .case_view import case_detail_json, case_json
from .export import check_period, write_statement
from .queue import Filters, count_queue, due_text, list_queue

WAITING = ("collecting", "awaiting_customer")  # open, but waiting on the customer rather than an agent


def register(commands: argparse._SubParsersAction) -> None:
    register_cases(commands)
    register_queue(commands)
    register_agents(commands)

    export = add_command(
        commands,
        "export",
        "refund statements as CSV for a period (PIF-10)",
        "One row per decided case in the period, days counted in the policy's time zone.\n\n"
        "example:\n  refunddesk export --from 2026-01-01 --to 2026-01-31 --output january.csv",
    )
    export.add_argument(
        "--from",
        dest="first",
        required=True,
        type=day,
        metavar=DAY_FORM,
        help=f"the first day, {DAY_FORM} (e.g. 2026-01-01)",
    )
    export.add_argument(
        "--to",
        dest="last",
        required=True,
        type=day,
        metavar=DAY_FORM,
        help=f"the last day, {DAY_FORM}, included (e.g. 2026-01-31)",
    )
    export.add_argument("--output", metavar="FILE", help="write the CSV to this file instead of standard output")
    export.set_defaults(func=cmd_export)


def register_cases(commands: argparse._SubParsersAction) -> None:
    cases = add_command(
        commands,
        "cases",
        "list, show and decide cases",
        f"Cases are named by {CASE_ID_FORM}, as the customer's letters show them.",
    ).add_subparsers(dest="cases_command", required=True, metavar="COMMAND", help="one of:")

    listing = add_command(cases, "list", "list cases: id, kind, status, channel, amount and contact")
    listing.add_argument("--status", choices=STATUSES, help="only cases in this status")
    listing.add_argument("--kind", choices=KINDS, help="only refund requests, or only appeals")
    add_json_option(listing)
    listing.set_defaults(func=cmd_cases_list)

    show = add_command(
        cases,
        "show",
        "show one case: its fields, findings, evidence and messages",
        "example:\n  refunddesk cases show RF-000001",
    )
    add_case_argument(show)
    add_json_option(show)
    show.set_defaults(func=cmd_cases_show)

    approve = add_command(
        cases,
        "approve",
        "approve a refund; the letter goes to the customer",
        "A case that is queued, awaiting the customer or still collecting can be decided.\n\n"
        'example:\n  refunddesk cases approve RF-000001 --amount 12.50 --note "One call was billed twice."',
    )
    add_case_argument(approve)
    approve.add_argument(
        "--amount",
        required=True,
        help="the refund, e.g. 12.50, in the case's currency; at most the amount requested (P302-13, PIF-5)",
    )
    approve.add_argument("--note", default="", help="a note to the customer, quoted in the letter")
    add_agent_option(approve)
    approve.set_defaults(func=cmd_approve)

    reject = add_command(
        cases,
        "reject",
        "reject a request with one of the policy's reasons; the letter goes to the customer",
        "A case that is queued, awaiting the customer or still collecting can be decided (an abandoned\n"
        "request is rejected as `incomplete`, P302-9).\n\n"
        'example:\n  refunddesk cases reject RF-000001 --reason not_platform_fault --note "The logs show one call."',
    )
    add_case_argument(reject)
    reject.add_argument(
        "--reason",
        required=True,
        metavar="CODE",
        help="a reason code of the policy, e.g. late or incomplete (`refunddesk cases reasons` lists them)",
    )
    reject.add_argument("--note", default="", help="the specific reason in your words, quoted in the letter")
    add_agent_option(reject)
    reject.set_defaults(func=cmd_reject)

    ask = add_command(
        cases,
        "request-info",
        "ask the customer for more; their answer puts the case back in the queue",
        'example:\n  refunddesk cases request-info RF-000001 --message "Which API key was charged?"',
    )
    add_case_argument(ask)
    ask.add_argument(
        "--message",
        required=True,
        help="what to ask, in your words; it is sent to the customer as it is (at most 4,000 characters)",
    )
    add_agent_option(ask)
    ask.set_defaults(func=cmd_request_info)

    held = add_command(
        cases,
        "confirm-held",
        "apply a message that was held because nobody vouched for its sender (its From named another mailbox "
        "than its envelope, or the trusted MTA's checks failed): the case page shows it as held",
        "example:\n  refunddesk cases confirm-held RF-000001 --inbound 42",
    )
    add_case_argument(held)
    held.add_argument(
        "--inbound", type=int, required=True, help="the held message's inbound number (the case's events name it)"
    )
    add_agent_option(held)
    held.set_defaults(func=cmd_confirm_held)

    special = add_command(
        cases,
        "flag",
        "set or clear a case's special-consideration flags (PIF-9; shown to agents, no automatic effect)",
        "The flags are the policy's own: the ipfixed preset has force_majeure, system_upgrade,\n"
        "security_incident, legal_change and long_term_user; 302ai has none. Run it without --special to\n"
        "see the flags of a case's policy. The flags given replace the case's flags.\n\n"
        "examples:\n  refunddesk cases flag RF-000001 --special force_majeure --special long_term_user\n"
        "  refunddesk cases flag RF-000001 --clear",
    )
    add_case_argument(special)
    choice = special.add_mutually_exclusive_group()
    choice.add_argument(
        "--special",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag of the case's policy, e.g. force_majeure; repeat for several",
    )
    choice.add_argument("--clear", action="store_true", help="remove every special-consideration flag of the case")
    add_agent_option(special)
    special.set_defaults(func=cmd_flag)

    reasons = add_command(cases, "reasons", "list the policy's reject reasons with their clauses")
    reasons.set_defaults(func=cmd_reasons)


def register_queue(commands: argparse._SubParsersAction) -> None:
    queue = add_command(
        commands,
        "queue",
        "cases waiting for review, most urgent first (overdue first and marked)",
        "By default the queued cases; the cases still collecting or awaiting the customer are listed with\n"
        "--status collecting or --status awaiting_customer.\n\n"
        "examples:\n  refunddesk queue\n  refunddesk queue --status all --search 扣了两次",
    )
    queue.add_argument(
        "--status",
        choices=[*STATUSES, "all"],
        default="queued",
        help="cases in this status (default: queued, the ones waiting for an agent)",
    )
    queue.add_argument("--kind", choices=KINDS, help="only refund requests, or only appeals")
    queue.add_argument("--channel", choices=CHANNELS, help="only cases that came by this channel")
    queue.add_argument("--agent", metavar="NAME", help="only cases this agent decided or acted on")
    queue.add_argument(
        "--search",
        metavar="WORDS",
        help="words in case ids, contacts, descriptions and customers' messages (Chinese too)",
    )
    add_json_option(queue)
    queue.set_defaults(func=cmd_queue)

    sla = add_command(commands, "sla", "acknowledgement and review times against the policy's promises")
    sla.add_argument("--days", type=int, default=30, metavar="N", help="cases created in the last N days (default 30)")
    add_json_option(sla)
    sla.set_defaults(func=cmd_sla)


def register_agents(commands: argparse._SubParsersAction) -> None:
    agents = add_command(
        commands,
        "agents",
        "agents' accounts: who may log in to the console and decide cases",
        "Accounts are disabled, never deleted, so the event log's names always resolve.",
    ).add_subparsers(dest="agents_command", required=True, metavar="COMMAND", help="one of:")
    add = add_command(
        agents,
        "add",
        "create an agent; the password is asked twice, or read from standard input",
        f"A password has at least {MIN_PASSWORD} characters.\n\n"
        "examples:\n  refunddesk agents add alice\n"
        "  printf '%s\\n' \"$PASSWORD\" | refunddesk agents add alice --password-stdin",
    )
    add.add_argument("name", help="the login name: 1-64 letters, digits, '.', '_', '@' or '-', e.g. alice")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )
    add.set_defaults(func=cmd_agents_add)
    listing = add_command(agents, "list", "list agents, active or disabled")
    listing.set_defaults(func=cmd_agents_list)
    for verb, disabled in (("disable", True), ("enable", False)):
        summary = f"{verb} an agent's console login and decisions (accounts are never deleted)"
        toggle = add_command(agents, verb, summary)
        toggle.add_argument("name", help="the agent's login name")
        toggle.set_defaults(func=cmd_agents_toggle, disabled=disabled)


def add_case_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=case_id, metavar="CASE", help=f"{CASE_ID_FORM}")


def add_agent_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agent",
        metavar="NAME",
        help="the acting agent, a registered one (default: $REFUNDDESK_AGENT, else your login name)",
    )


def acting_agent(args: argparse.Namespace, db: sqlite_utils.Database) -> str:
    """The registered, enabled agent the command acts for, spelt as registered."""
    given = args.agent or os.environ.get("REFUNDDESK_AGENT")
    try:
        name = given or getpass.getuser()
    except OSError:
        raise UserError("name the acting agent with --agent NAME (or $REFUNDDESK_AGENT)") from None
    found = account(db, name)
    if found is None:
        how = "" if given else "; name yours with --agent NAME"
        raise UserError(f"{name} is not a registered agent (`refunddesk agents list` shows them){how}")
    registered, disabled = found
    if disabled:
        raise UserError(f"agent {registered} is disabled (`refunddesk agents enable {registered}`)")
    return registered


def os_user() -> str:
    """Who ran an accounts command, for the event log (adding the first agent needs no account)."""
    return os.environ.get("REFUNDDESK_AGENT") or getpass.getuser()


def loaded_case(db: sqlite_utils.Database, case: str):
    found = case_store.load_case(db, case)
    if found is None:
        raise UserError(f"no case {case} (a case id looks like RF-000001; `refunddesk cases list` shows them)")
    return found


# --- reading cases -------------------------------------------------------------------------------


def cmd_cases_list(args: argparse.Namespace) -> int:
    _, db = opened(args)
    found = case_store.list_cases(db, status=args.status, kind=args.kind)
    if args.json:
        print(json.dumps([case_json(c) for c in found], ensure_ascii=False, indent=2))
        return 0
    for case in found:
        amount = f"{case.fields.get('amount', '')} {case.fields.get('currency') or ''}".strip()
        print(f"{case.id}  {case.kind:<6}  {case.status:<17}  {case.channel:<8}  {amount:<14}  {case.contact}")
    if not found:
        print(
            "no cases"
            + "".join(
                f" with {name} {value}" for name, value in (("status", args.status), ("kind", args.kind)) if value
            )
        )
    return 0


def cmd_cases_show(args: argparse.Namespace) -> int:
    _, db = opened(args)
    data = case_detail_json(db, loaded_case(db, args.id))
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    for key in (
        "id",
        "kind",
        "status",
        "channel",
        "contact",
        "amount",
        "currency",
        "incident_at",
        "created_at",
        "acknowledged_at",
        "review_due_at",
        "parent_id",
    ):
        print(f"{key:>16}: {data[key] if data[key] is not None else ''}")
    print(f"{'description':>16}: {data['description'] or ''}")
    for finding in data["findings"]:
        blocking = "BLOCKING " if finding["blocking"] else ""
        print(f"{'finding':>16}: [{finding['clause']}] {blocking}{finding['message']}")
    for attachment in data["attachments"]:
        print(f"{'evidence':>16}: {attachment['filename']} ({attachment['content_type']}, {attachment['size']} bytes)")
    for message in data["messages"]:
        print(f"\n--- {message['direction']} {message['channel']} {message['at']} {message['subject']}")
        print(message["text"])
    return 0


# --- decisions -----------------------------------------------------------------------------------


def decide(args: argparse.Namespace, action) -> int:
    # Deciding writes the letter through the pipeline's outbox and templates: only these commands load them.
    from .decisions import DecisionError  # noqa: PLC0415

    desk, db = opened(args)
    agent = acting_agent(args, db)
    try:
        done = action(desk, db, agent)
    except DecisionError as exc:
        return fail(str(exc))
    case = done.case
    print(
        f"{case.id} {case.status} by {agent}; letter to the customer queued (outbox {done.outbox_id}, {case.channel})"
    )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from .decisions import approve  # noqa: PLC0415  (see decide)

    return decide(args, lambda desk, db, agent: approve(desk, db, args.id, agent, args.amount, args.note))


def cmd_reject(args: argparse.Namespace) -> int:
    from .decisions import reject  # noqa: PLC0415  (see decide)

    return decide(args, lambda desk, db, agent: reject(desk, db, args.id, agent, args.reason, args.note))


def cmd_request_info(args: argparse.Namespace) -> int:
    from .decisions import request_info  # noqa: PLC0415  (see decide)

    return decide(args, lambda desk, db, agent: request_info(desk, db, args.id, agent, args.message))


def cmd_confirm_held(args: argparse.Namespace) -> int:
    # Applying the message runs the pipeline (the reader, the dialog): only this command loads it.
    from refunddesk.intake import pipeline  # noqa: PLC0415
    from refunddesk.intake.budget import Budget  # noqa: PLC0415

    desk, db = opened(args)
    agent = acting_agent(args, db)
    case = loaded_case(db, args.id)
    held = db.execute(
        "SELECT 1 FROM events WHERE case_id = ? AND action = 'unverified_message_held' "
        "AND json_extract(data, '$.inbound') = ?",
        [case.id, args.inbound],
    ).fetchone()
    if held is None or not spool.reopen_confirmed(db, args.inbound, case.id, agent):
        return fail(f"inbound {args.inbound} is no held message of {case.id}")
    status = pipeline.process(desk, db, args.inbound, budget=Budget(desk.config.worker.message_seconds))
    print(f"inbound {args.inbound}: {status}; applied to {case.id}, confirmed by {agent}")
    return 0 if status == "done" else 1


def cmd_flag(args: argparse.Namespace) -> int:
    from .decisions import DecisionError, set_special_flags  # noqa: PLC0415  (see decide)

    desk, db = opened(args)
    case = loaded_case(db, args.id)
    allowed = list(desk.policy.version_of(case).special.get("flags", ()))
    if not args.special and not args.clear:
        known = ", ".join(allowed) or "none"
        return fail(
            f"name the flags to set with --special FLAG ({case.id}'s policy knows: {known}), "
            "or remove them all with --clear"
        )
    agent = acting_agent(args, db)
    try:
        chosen = set_special_flags(db, case.id, agent, args.special, allowed)
    except DecisionError as exc:
        return fail(str(exc))
    print(f"{case.id}: special consideration: {', '.join(chosen) or 'none'}")
    return 0


def cmd_reasons(args: argparse.Namespace) -> int:
    desk, _ = opened(args)
    for code, clause in desk.policy.versions[-1].reject_reasons.items():
        print(f"{code:<24} {clause}")
    return 0


# --- the queue and the SLA report ----------------------------------------------------------------


def cmd_queue(args: argparse.Namespace) -> int:
    desk, db = opened(args)
    now = utcnow()
    filters = Filters(None if args.status == "all" else args.status, args.kind, args.channel, args.agent, args.search)
    items = list_queue(desk, db, now, filters)
    if args.json:
        print(json.dumps([item.to_dict() for item in items], ensure_ascii=False, indent=2))
        return 0
    for item in items:
        amount = f"{item.amount or '-'} {item.currency or ''}".strip()
        marks = " ".join(
            m
            for m in (
                "OVERDUE" if item.overdue else "",
                "due-soon" if item.due_soon else "",
                "ACK-AT-RISK" if "ack_at_risk" in item.flags.get("sla", {}) else "",
            )
            if m
        )
        print(
            f"{item.id}  {item.kind:<6}  {item.status:<17}  {item.channel:<8}  {amount:<14}  "
            f"age {item.age_hours:6.1f} h  due {due_text(item, now):<16}  {marks}"
        )
        for finding in item.blocking:
            print(f"    blocking [{finding['clause']}] {finding['message']}")
        if item.suggestion and item.suggestion["basis"] not in ("requested", "unknown"):
            print(
                f"    suggested {item.suggestion['amount']} {item.suggestion['currency']} "
                f"({item.suggestion['clause']}): " + " ".join(item.suggestion["steps"])
            )
        if item.parent_decided_by:
            print(
                f"    appeal of {item.parent_id}, decided by {item.parent_decided_by}: another agent decides this one"
            )
    if not items:
        print(nothing_listed(db, filters))
    return 0


def nothing_listed(db: sqlite_utils.Database, filters: Filters) -> str:
    """What an empty queue means: nothing waits for an agent, and how many wait for the customer."""
    if filters != Filters():
        return "no case matches"
    waiting = {status: count_queue(db, Filters(status=status)) for status in WAITING}
    if not any(waiting.values()):
        return "the queue is empty: no case waits for review, none waits for the customer"
    counted = " and ".join(f"{n} {status.replace('_', ' ')}" for status, n in waiting.items() if n)
    listed = " or ".join(f"`refunddesk queue --status {status}`" for status, n in waiting.items() if n)
    return f"the queue is empty: no case waits for review; {counted} (still with the customer: {listed})"


def cmd_sla(args: argparse.Namespace) -> int:
    # The report shares its promises with the SLA watcher of `serve`, which loads asyncio (~30 ms).
    from .sla_report import report  # noqa: PLC0415

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
        median = tally.median_hours if tally.median_hours is not None else "-"
        print(
            f"{title} {limit}: {percent}  (on time {tally.on_time}, late {tally.late}, missed {tally.missed}, "
            f"still open {tally.pending}; median {median} h)"
        )
    if result.open_overdue:
        print(f"overdue in the queue: {', '.join(result.open_overdue)}")
    print(
        f"dead letters: {result.dead_letter_count}"
        + (
            " (refunddesk deadletters list; retry with refunddesk deadletters retry ID)"
            if result.dead_letter_count
            else ""
        )
    )
    for dead in result.dead_letters[:10]:
        print(f"  inbound {dead['id']} ({dead['channel']}, {dead['received_at'][:16]}): {dead['error'] or ''}")
    return 0


# --- agents and export ---------------------------------------------------------------------------


def cmd_agents_add(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name} (at least {MIN_PASSWORD} characters): ")
        if getpass.getpass("again: ") != password:
            return fail("the passwords differ")
    else:
        return fail("no terminal to ask for the password; use --password-stdin")
    _, db = opened(args)
    try:
        add(db, args.name, password, utcnow(), os_user())
    except AgentError as exc:
        return fail(str(exc))
    print(f"agent {args.name} added")
    return 0


def cmd_agents_list(args: argparse.Namespace) -> int:
    _, db = opened(args)
    rows = listing(db)
    for row in rows:
        print(f"{row['name']:<32} {'disabled' if row['disabled'] else 'active':<8}  since {row['created_at'][:10]}")
    if not rows:
        print("no agents yet (add one with `refunddesk agents add NAME`)")
    return 0


def cmd_agents_toggle(args: argparse.Namespace) -> int:
    _, db = opened(args)
    try:
        set_disabled(db, args.name, args.disabled, utcnow(), os_user())
    except AgentError as exc:
        return fail(str(exc))
    print(f"agent {args.name} {'disabled' if args.disabled else 'enabled'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    desk, db = opened(args)
    try:
        check_period(args.first, args.last)  # before --output's file is made
    except ValueError as exc:
        return fail(str(exc))
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            summary = write_statement(desk, db, args.first, args.last, out)
        print(f"wrote {args.output}: {summary}", file=sys.stderr)
    else:
        summary = write_statement(desk, db, args.first, args.last, sys.stdout)
        print(f"exported {summary}", file=sys.stderr)
    return 0
