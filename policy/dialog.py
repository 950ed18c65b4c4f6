"""The guided dialog, one pure function for every channel.

`step(case, inbound, now, ctx)` reads what the customer said into the case, runs the rules
and says what to send back. Email is answered with one letter listing everything missing
("letter" style); chat asks one thing at a time with buttons ("chat" style). Both read the
same fields with the same readers, so a rule is written once.

Nothing here reads the clock, the disk or the network: `now` and `ctx` come from the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any

from . import answers
from .context import Context
from .deadlines import review_due
from .extract import detect_language, read_all, read_labelled
from .form import read_form
from .model import DECIDED_STATUSES, OPEN_STATUSES, Case, Finding, InboundMessage, Reply, StepResult, read_choices
from .preset import PolicyVersion
from .rules import deadlines_of, evaluate, missing_items
from .text import READ_LIMIT

CHAT_CHANNELS = ("telegram",)
CASE_REF = re.compile(r"\b(RF|AP)-?(\d{1,9})\b", re.IGNORECASE)
CONFIRM_WORDS = ("yes", "y", "ok", "confirm", "correct", "是", "好", "确认", "对", "没问题")
# A chat message this long is a sentence about the problem, not a one-word answer.
STORY_MIN_LATIN = 24
STORY_MIN_CJK = 8
DONE_WORDS = ("done", "that's all", "thats all", "no more", "完成", "好了", "没有了", "就这些")


@dataclass(frozen=True)
class Reading:
    """What the customer's text says, read without the case: every field it makes certain,
    which of them were labelled, and the lines of our fill-in block."""

    found: dict[str, str] = field(default_factory=dict)
    labelled: frozenset[str] = frozenset()
    form: dict[str, str] = field(default_factory=dict)
    # Per field found in free text where the reader chose among several values: all of them,
    # the chosen one first ("$1,050 total, so you owe me $700": 700, 1050).
    candidates: dict[str, tuple[str, ...]] = field(default_factory=dict)


def read(inbound: InboundMessage, now: datetime, tz: tzinfo) -> Reading:
    """The part of a step that needs no case. The worker reads a message before it takes the
    store's write lock and hands the reading to step(): this was ~40 % of the time the lock
    was held per mail, while the SMTP receiver's 250s waited on it (bench/smtp_intake.py)."""
    text = (inbound.text or "")[:READ_LIMIT]
    if not text.strip():
        return Reading()
    fields = read_all(reading_text(inbound), now, tz)
    return Reading(fields.fields, frozenset(read_labelled(text)), read_form(text), fields.candidates)


FORWARDED_FILE = "forwarded-message.txt"  # where intake/email/parse.py sets a forwarded message aside


def reading_text(inbound: InboundMessage) -> str:
    """What the field reader reads: the customer's own words, and below them a message they
    forwarded (intake sets it aside as a file): "forwarding my request from last week" holds
    its amount and date only there. read_fields reads the forward only for what the own words
    leave empty, and only when it is a person's letter, not a receipt or a notice."""
    text = (inbound.text or "")[:READ_LIMIT]
    forwarded = next((a.data for a in inbound.attachments if a.filename == FORWARDED_FILE and a.data), None)
    if forwarded is None:
        return text
    return text + "\n\n" + forwarded[: 4 * READ_LIMIT].decode("utf-8", errors="replace")[:READ_LIMIT]


def style_of(channel: str) -> str:
    return "chat" if channel in CHAT_CHANNELS else "letter"


def new_case(case_id: str, inbound: InboundMessage, now: datetime, kind: str | None = None) -> Case:
    """A fresh case for a conversation that has none open; the store assigned its ID."""
    return Case(
        id=case_id,
        kind=kind or inbound.kind_hint or "refund",
        status="collecting",
        channel=inbound.channel,
        contact=inbound.sender,
        language=inbound.language or detect_language((inbound.text or inbound.subject)[:READ_LIMIT]),
        created_at=now,
        conversation_key=inbound.conversation_key,
        dialog={"style": style_of(inbound.channel), "turns": 0},
    )


def step(
    case: Case, inbound: InboundMessage, now: datetime, ctx: Context, reading: Reading | None = None
) -> StepResult:
    """`reading` is read(inbound, now, policy timezone), when the caller made it already."""
    if len(inbound.text or "") > READ_LIMIT:  # the dialog reads no further than the readers do
        inbound = replace(inbound, text=inbound.text[:READ_LIMIT])
    reading = reading if reading is not None else read(inbound, now, ctx.policy.timezone)
    version = ctx.policy.version_at(_purchase_moment(case) or case.created_at or now)
    case = replace(case, policy_version=version.version)
    events: list[tuple[str, dict[str, Any]]] = []
    first_turn = not case.dialog.get("turns")
    case = replace(case, dialog={**case.dialog, "turns": int(case.dialog.get("turns", 0)) + 1})

    if inbound.command == "cancel":
        return _cancel(case, version, ctx, now)

    if case.status in DECIDED_STATUSES or case.status == "withdrawn":
        case, _ = _absorb(case, inbound, now, ctx, version, reading)
        return StepResult(case, case.findings, (Reply("closed", _letter(case, version, ctx, now), "notice"),), ())

    before = dict(case.fields)
    case, invalid = _absorb(case, inbound, now, ctx, version, reading)
    changed = case.fields != before or bool(inbound.attachments)
    for name in sorted(set(case.fields) - set(before)):
        events.append(("field_set", {"field": name, "value": case.fields[name]}))
    for name in sorted(k for k in before if k in case.fields and before[k] != case.fields[k]):
        events.append(("field_changed", {"field": name, "from": before[name], "to": case.fields[name]}))
    for name, choice in sorted(read_choices(case).items()):
        if before.get(name) != case.fields[name]:
            events.append(("field_chosen", {"field": name, **choice}))

    findings = evaluate(case, version, ctx, now)
    missing = missing_items(case, version)
    case = replace(case, findings=findings, deadline_at=_first_deadline(case, version, ctx))

    if case.status == "awaiting_customer":
        if changed or inbound.text.strip():
            # The review clock restarts when the customer answers: the wait was on them, not us.
            case = replace(_complete(case, now, ctx, version), completed_at=case.completed_at or now)
            events.append(("customer_answered", {}))
            return StepResult(
                case,
                findings,
                (Reply("resumed", _letter(case, version, ctx, now, missing, invalid), "notice"),),
                tuple(events),
            )
        return StepResult(case, findings, (), tuple(events))

    if case.status == "queued":
        replies = (Reply("added", _letter(case, version, ctx, now, missing, invalid), "notice"),) if changed else ()
        return StepResult(case, findings, replies, tuple(events))

    if style_of(case.channel) == "chat":
        return _chat_turn(case, inbound, now, ctx, version, missing, invalid, events)
    return _letter_turn(case, now, ctx, version, missing, invalid, events, first_turn)


# --- reading the customer's message into the case ------------------------------------------------


def _absorb(
    case: Case, inbound: InboundMessage, now: datetime, ctx: Context, version: PolicyVersion, reading: Reading
) -> tuple[Case, dict[str, str]]:
    """Take every field the message gives. Free text only fills empty fields; an explicit
    labelled line or a direct answer may correct one. Nothing already held is ever dropped."""
    tz = ctx.policy.timezone
    text = inbound.text or ""
    invalid: dict[str, str] = {}
    updates: dict[str, str] = {}
    for name, value in reading.found.items():
        if name == "case_ref":
            continue
        if not case.fields.get(name) or _is_labelled(name, reading.labelled):
            updates[name] = value
    # Lines of our own fill-in block are explicit answers: each is read as the answer to its question.
    for name, value in reading.form.items():
        if version.field(name) is None and name != "currency":
            continue
        values, problem = answers.read_answer(name, value, None, now, tz, version)
        if problem:
            invalid[name] = problem
        else:
            updates.update(values)

    asking = case.dialog.get("asking")
    # A button answers the question asked only if it is that question's button: an old
    # button pressed later (another field's choice, "done") must not be read as the answer.
    command = inbound.command or ""
    if asking and asking not in ("evidence", "confirm") and (text.strip() or command.startswith(f"choose:{asking}:")):
        values, problem = answers.read_answer(asking, text, inbound.command, now, tz, version)
        if problem:
            invalid[asking] = problem
        elif values:
            updates.update(values)
    elif inbound.command and inbound.command.startswith("choose:"):
        _, name, choice = inbound.command.split(":", 2)
        values, problem = answers.read_answer(name, choice, inbound.command, now, tz, version)
        if values:
            updates.update(values)

    for name in ("reason", "credit_type", "payment_method"):
        if not case.fields.get(name) and name not in updates and version.field(name) and text.strip():
            guessed = answers.guess_choice(name, text, version)
            if guessed:
                updates[name] = guessed

    if case.kind == "appeal" and not case.fields.get("parent_ref"):
        ref = inbound.case_ref or _case_ref_in(text + " " + inbound.subject, exclude=case.id)
        if ref:
            updates["parent_ref"] = ref

    if (
        _tells_the_story(case, asking, inbound, version)
        and not case.fields.get("description")
        and "description" not in updates
    ):
        description = answers.describe(text)
        if description:
            updates["description"] = description

    updates, rejected = answers.validate(updates, now, version)
    invalid.update(rejected)
    case = _remember_choices(case.with_fields(**updates), updates, reading)
    if inbound.attachments:
        have = {a["sha256"] for a in case.attachments}
        fresh = tuple(a.metadata() for a in inbound.attachments if a.sha256 not in have)
        case = replace(case, attachments=case.attachments + _unique(fresh))
    return case, invalid


def _remember_choices(case: Case, updates: dict[str, str], reading: Reading) -> Case:
    """Keep, for each field just taken from free text where the reader chose, the values it
    passed over: the letter says which it took and how to correct it, the agent sees them.
    A field set again by this message (a labelled line, an answer) loses its old choice."""
    choices = {name: choice for name, choice in case.dialog.get("read_choices", {}).items() if name not in updates}
    for name, value in updates.items():
        others = [c for c in reading.candidates.get(name, ()) if c != value]
        if others and reading.found.get(name) == value:
            choices[name] = {"value": value, "others": others}
    if choices == case.dialog.get("read_choices", {}):
        return case
    return replace(case, dialog={**case.dialog, "read_choices": choices})


def _tells_the_story(case: Case, asking: str | None, inbound: InboundMessage, version: PolicyVersion) -> bool:
    """A letter is the customer's own account of the problem. So is a chat message that opens
    the case, or answers "What happened?" (the reason's question) in a sentence instead of a
    button: asking for the description again would make the customer repeat themselves."""
    if style_of(case.channel) == "letter":
        return True
    text = (inbound.text or "").strip()
    if asking not in (None, "reason") or inbound.command not in (None, "refund", "appeal"):
        return False
    if answers.exact_choice("reason", text, version):
        return False
    return len(text) >= STORY_MIN_LATIN or (
        len(text) >= STORY_MIN_CJK and re.search(r"[\u4e00-\u9fff]", text) is not None
    )


def _is_labelled(name: str, labelled: frozenset[str]) -> bool:
    return name in labelled or (name == "currency" and "amount" in labelled)


def _unique(items: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item["sha256"] not in seen:
            seen.add(item["sha256"])
            out.append(item)
    return tuple(out)


def _case_ref_in(text: str, exclude: str | None) -> str | None:
    for match in CASE_REF.finditer(text):
        ref = f"{match.group(1).upper()}-{int(match.group(2)):06d}"
        if ref != exclude:
            return ref
    return None


def _purchase_moment(case: Case) -> datetime | None:
    value = case.fields.get("purchase_at")
    return datetime.fromisoformat(value) if value else None


def _first_deadline(case: Case, version: PolicyVersion, ctx: Context) -> datetime | None:
    deadlines = [d.at for _, d in deadlines_of(case, version, ctx)]
    return min(deadlines) if deadlines else None


# --- the two styles -------------------------------------------------------------------------------


def _complete(case: Case, now: datetime, ctx: Context, version: PolicyVersion) -> Case:
    review = version.review.get(case.kind) or version.review["refund"]
    due = review_due(ctx.calendar, ctx.policy.timezone, now, int(review["length"]), review["unit"])
    return replace(
        case, status="queued", completed_at=now, review_due_at=due.at, dialog={**case.dialog, "asking": None}
    )


def _letter_turn(case, now, ctx, version, missing, invalid, events, first_turn) -> StepResult:
    if not missing:
        case = _complete(case, now, ctx, version)
        events.append(("completed", {}))
    letter = _letter(case, version, ctx, now, missing, invalid)
    if first_turn:
        reply = Reply("ack", letter, "ack")
    elif not missing:
        reply = Reply("queued", letter, "dialog")
    else:
        reply = Reply("missing", letter, "dialog")
    return StepResult(case, case.findings, (reply,), tuple(events))


def _chat_turn(case, inbound, now, ctx, version, missing, invalid, events) -> StepResult:
    dialog = dict(case.dialog)
    asking = dialog.get("asking")
    command = inbound.command or ""

    if command.startswith("edit:"):
        field_name = command.split(":", 1)[1]
        dialog["asking"] = field_name
        case = replace(case, dialog=dialog)
        return StepResult(case, case.findings, (_question(case, version, field_name, None, ctx, now),), tuple(events))

    if asking == "evidence" and (command == "done_evidence" or _said(inbound.text, DONE_WORDS)):
        if "evidence" not in missing:
            dialog["evidence_done"] = True
        else:
            invalid["evidence"] = "evidence_required"

    if inbound.attachments and asking == "evidence" and "evidence" not in missing and not dialog.get("evidence_done"):
        case = replace(case, dialog=dialog)
        context = _letter(case, version, ctx, now, missing, invalid)
        return StepResult(
            case,
            case.findings,
            (Reply("evidence_received", context, "dialog", (("done", "done_evidence"),)),),
            tuple(events),
        )

    pending = [m for m in missing]
    if not pending and not dialog.get("evidence_done") and version.evidence_required(case.kind):
        pending = ["evidence"]
    if pending:
        target = pending[0]
        dialog["asking"] = target
        case = replace(case, dialog=dialog)
        return StepResult(
            case, case.findings, (_question(case, version, target, invalid.get(target), ctx, now),), tuple(events)
        )

    if asking == "confirm" and (command == "confirm" or _said(inbound.text, CONFIRM_WORDS)):
        case = _complete(replace(case, dialog=dialog), now, ctx, version)
        events.append(("completed", {}))
        return StepResult(
            case, case.findings, (Reply("queued", _letter(case, version, ctx, now), "ack"),), tuple(events)
        )

    dialog["asking"] = "confirm"
    case = replace(case, dialog=dialog)
    buttons = (("confirm", "confirm"),) + tuple((f"edit {name}", f"edit:{name}") for name in _editable(case, version))
    return StepResult(
        case, case.findings, (Reply("summary", _letter(case, version, ctx, now), "dialog", buttons),), tuple(events)
    )


def _editable(case: Case, version: PolicyVersion) -> list[str]:
    return [spec.name for spec in version.fields_for(case.kind, case.fields.get("reason"))]


def _question(
    case: Case, version: PolicyVersion, field_name: str, problem: str | None, ctx: Context, now: datetime
) -> Reply:
    context = _letter(case, version, ctx, now)
    context.update({"field": field_name, "problem": problem})
    spec = version.field(field_name)
    buttons: tuple[tuple[str, str], ...] = ()
    if spec is not None and spec.type == "choice":
        buttons = tuple((choice, f"choose:{field_name}:{choice}") for choice in version.choices_for(spec))
    elif field_name == "evidence" and "evidence" not in missing_items(case, version):
        buttons = (("done", "done_evidence"),)
    return Reply("ask", context, "dialog", buttons)


def _cancel(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> StepResult:
    if case.status not in OPEN_STATUSES:
        return StepResult(case, case.findings, (Reply("closed", _letter(case, version, ctx, now), "notice"),), ())
    case = replace(case, status="withdrawn", dialog={**case.dialog, "asking": None})
    return StepResult(
        case, case.findings, (Reply("cancelled", _letter(case, version, ctx, now), "notice"),), (("withdrawn", {}),)
    )


def _said(text: str, words: tuple[str, ...]) -> bool:
    return text.strip().lower().rstrip(".!。！") in words


# --- what a letter needs to know ------------------------------------------------------------------


def _letter(
    case: Case,
    version: PolicyVersion,
    ctx: Context,
    now: datetime,
    missing: list[str] | None = None,
    invalid: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Plain values for the templates; templates own every word the customer reads."""
    tz = ctx.policy.timezone
    missing = missing_items(case, version) if missing is None else missing
    deadlines = [
        {"code": w.code, "clause": w.clause, "date": d.at.astimezone(tz).date().isoformat(), "covered": d.covered}
        for w, d in deadlines_of(case, version, ctx)
    ]
    review = version.review.get(case.kind) or version.review["refund"]
    return {
        "case_id": case.id,
        "kind": case.kind,
        "status": case.status,
        "policy": ctx.policy.id,
        "policy_name": ctx.policy.name,
        "fields": dict(case.fields),
        "read_choices": read_choices(case),
        "attachments": [dict(a) for a in case.attachments],
        "evidence_minimum": version.evidence_required(case.kind),
        "missing": list(missing),
        "invalid": dict(invalid or {}),
        "choices": {spec.name: list(version.choices_for(spec)) for spec in version.fields if spec.type == "choice"},
        "required": [spec.name for spec in version.fields_for(case.kind, case.fields.get("reason"))],
        "clauses": {spec.name: spec.clause for spec in version.fields},
        "evidence_clause": version.evidence.get("clause", ""),
        "deadlines": deadlines,
        "review_due": case.review_due_at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if case.review_due_at else None,
        "review_days": review["length"],
        "review_clause": review.get("clause", ""),
        "notices": [
            f.to_dict()
            for f in case.findings
            if f.code not in ("missing_field", "missing_evidence") and _customer_visible(f)
        ],
        "timezone": str(tz),
        "today": now.astimezone(tz).date().isoformat(),
    }


def _customer_visible(finding: Finding) -> bool:
    # Fraud signals are for agents only; telling the customer would teach evasion.
    return finding.code not in ("repeat_requests", "duplicate_evidence", "appeal_other_contact", "calendar_unverified")
