"""Every customer-facing template renders in English and Chinese from a realistic context.

The contexts are built the way `policy.dialog._letter()` builds them, from the real presets,
the real working-day calendar and the real rules (deadlines, review due dates, findings), plus
what `intake.pipeline.enqueue_reply` adds ("style", "channel", "letter") and the few keys some
templates need on top ("field"/"problem" for ask, "cases" for status, ...). Nothing is mocked.

The checks are the ones a translation can get wrong: a zh template that is missing or fails to
render, an English sentence left in a Chinese letter, a dropped case ID in a subject, a deadline
or review date that no longer appears, a fill-in label the customer cannot find, and a customer
value that would break a subject line into two header lines.
"""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2 import meta, nodes

from refunddesk.policy.calendar import WorkingCalendar
from refunddesk.policy.context import Context, History
from refunddesk.policy.dialog import read_choices
from refunddesk.policy.deadlines import review_due
from refunddesk.policy.model import Case, Finding
from refunddesk.policy.preset import load_preset
from refunddesk.policy.rules import deadlines_of, evaluate, missing_items
from refunddesk.render import environment, render

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
EN_DIR = TEMPLATES_DIR / "en"
ZH_DIR = TEMPLATES_DIR / "zh"
TEMPLATE_NAMES = sorted(p.name[: -len(".txt.j2")] for p in EN_DIR.glob("*.txt.j2"))
SOURCE_FILES = sorted(p.name for p in EN_DIR.glob("*.j2"))

INJECTION = "\r\nBcc: x@evil"
NOW = datetime.fromisoformat("2026-11-22T10:00:00+08:00")
CALENDAR = WorkingCalendar("CN")
HAN = re.compile(r"[\u4e00-\u9fff]")
# Three or more English words in a row: a sentence (or a piece of one), never a code or a name.
ENGLISH_RUN = re.compile(r"[A-Za-z][A-Za-z'’-]*(?:[ ,;:]+[A-Za-z][A-Za-z'’-]*){2,}")

# Customer-visible finding codes the templates must phrase themselves (dialog._customer_visible
# hides the fraud signals; missing_* are listed separately). A code outside this list would fall
# through to the English `message` of the finding.
VISIBLE_NOTICE_CODES = {
    "deadline_passed", "appeal_window_passed", "ineligible_reason", "gifted_credit", "quota_exceeded",
    "outage_too_short", "below_minimum", "appeal_parent_unknown", "appeal_parent_undecided",
}
HIDDEN_CODES = ("missing_field", "missing_evidence", "repeat_requests", "duplicate_evidence", "appeal_other_contact", "calendar_unverified")


# --- contexts built as dialog._letter() builds them ----------------------------------------------


def attachment(name: str, sha: str) -> dict[str, Any]:
    return {"filename": name, "content_type": "image/png", "size": 48213, "sha256": sha * 64}


def make_case(preset: str, kind: str, status: str, channel: str, fields: dict[str, str], attachments=(), case_id=None) -> Case:
    return Case(
        id=case_id or ("AP-000042" if kind == "appeal" else "RF-000311"),
        kind=kind,
        status=status,
        channel=channel,
        contact="marta@lumenlabs.io" if channel == "email" else "tg:551020",
        language="zh",
        fields=dict(fields),
        attachments=tuple(attachments),
        created_at=NOW,
        conversation_key="551020" if channel == "telegram" else "",
    )


def letter_context(
    preset: str,
    case: Case,
    *,
    complete: bool = False,
    invalid: dict[str, str] | None = None,
    known_cases: dict[str, Case] | None = None,
    history: History | None = None,
) -> dict[str, Any]:
    """The context `_letter()` returns, then what `enqueue_reply()` adds."""
    policy = load_preset(preset)
    tz = policy.timezone
    purchase = case.fields.get("purchase_at")
    version = policy.version_at(datetime.fromisoformat(purchase) if purchase else case.created_at)
    ctx = Context(policy, CALENDAR, known_cases or {}, history or History())
    case = replace(case, findings=evaluate(case, version, ctx, NOW))
    review = version.review.get(case.kind) or version.review["refund"]
    missing = missing_items(case, version)
    if complete or (not missing and case.status == "collecting"):
        # dialog._complete(): nothing missing, so the case is queued with a review due date.
        due = review_due(CALENDAR, tz, NOW, int(review["length"]), review["unit"])
        status = "queued" if case.status == "collecting" else case.status
        case = replace(case, status=status, completed_at=NOW, review_due_at=due.at)
    deadlines = [
        {"code": w.code, "clause": w.clause, "date": d.at.astimezone(tz).date().isoformat(), "covered": d.covered}
        for w, d in deadlines_of(case, version, ctx)
    ]
    context = {
        "case_id": case.id,
        "kind": case.kind,
        "status": case.status,
        "policy": policy.id,
        "policy_name": policy.name,
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
        "notices": [f.to_dict() for f in case.findings if f.code not in HIDDEN_CODES],
        "timezone": str(tz),
        "today": NOW.astimezone(tz).date().isoformat(),
    }
    context["style"] = "chat" if case.channel == "telegram" else "letter"
    context["channel"] = case.channel
    context["letter"] = context
    return context


def scenarios() -> dict[str, dict[str, Any]]:
    shot = attachment("charge-screenshot.png", "a")
    log = attachment(f"api-log{INJECTION}.txt", "b")
    return {
        # A complete 302.AI refund by email, with the header injection in every free-text field.
        "302ai-complete": letter_context("302ai", make_case("302ai", "refund", "collecting", "email", {
            "reason": "duplicate_charge", "credit_type": "paid", "amount": "12.50", "currency": "USD",
            "incident_at": "2026-11-20T10:00:00+08:00", "incident_date_only": "",
            "account_id": f"acme-prod-7{INJECTION}",
            "description": f"The request timed out but I was billed twice for it.{INJECTION}",
        }, (shot, log)), complete=True),
        # The first letter of an incomplete one: reason, credit type and evidence still owed.
        # The reader chose 100 over another amount in the text.
        "302ai-incomplete": letter_context("302ai", replace(make_case("302ai", "refund", "collecting", "email", {
            "amount": "100", "currency": "CNY", "incident_at": "2026-11-20T10:00:00+08:00",
            "account_id": f"13800138000{INJECTION}", "description": "调用接口一直报错 502，但还是扣了费。",
        }), dialog={"read_choices": {"amount": {"value": "100", "others": ["500"]}}}), invalid={"amount": "too_large", "incident_at": "in_future"}),
        # Nothing given yet: every field is missing, no deadline known.
        "302ai-empty": letter_context("302ai", make_case("302ai", "refund", "collecting", "email", {})),
        # Gifted credit (P302-3) and a late request (P302-5), decided and closed.
        "302ai-late-gifted": letter_context("302ai", make_case("302ai", "refund", "rejected", "email", {
            "reason": "withdrawal", "credit_type": "gifted", "amount": "30", "currency": "USD",
            "incident_at": "2026-10-01T09:00:00+08:00", "account_id": "u_777", "description": "Please transfer my balance.",
        }, (shot,))),
        # ipfixed by chat: a mistaken purchase (24-hour window) with choices still to pick.
        "ipfixed-mistaken": letter_context("ipfixed", make_case("ipfixed", "refund", "collecting", "telegram", {
            "reason": "mistaken_purchase", "purchase_at": "2026-11-22T08:30:00+08:00", "account_id": "hq_mei",
        })),
        # ipfixed: an outage too short, over the quota, under the minimum, a third party's fault, late.
        "ipfixed-findings": letter_context("ipfixed", make_case("ipfixed", "refund", "approved", "email", {
            "reason": "outage", "outage_hours": "10", "purchase_at": "2026-09-01T12:00:00+08:00",
            "quota_used_pct": "80", "amount": "0.50", "currency": "USD", "account_id": "cloud9",
            "payment_method": "paypal", "description": f"服务中断了十个小时。{INJECTION}",
        }, (shot,)), complete=True),
        "ipfixed-third-party": letter_context("ipfixed", make_case("ipfixed", "refund", "queued", "telegram", {
            "reason": "third_party", "purchase_at": "2026-11-20T12:00:00+08:00", "quota_used_pct": "10",
            "amount": "99", "currency": "CNY", "account_id": "tiger_z", "payment_method": "balance",
            "description": "OpenAI is down, upstream provider problem.",
        }, (shot,)), complete=True),
        # Appeals: to an unknown case, to an undecided one, and a late one on the ipfixed window.
        "302ai-appeal-unknown": letter_context("302ai", make_case("302ai", "appeal", "collecting", "email", {
            "parent_ref": "RF-000999", "account_id": "pixelforge", "description": "I disagree with the decision.",
        })),
        "302ai-appeal-undecided": letter_context("302ai", make_case("302ai", "appeal", "collecting", "telegram", {
            "parent_ref": "RF-000311", "account_id": "pixelforge",
        }), known_cases={"RF-000311": make_case("302ai", "refund", "queued", "telegram", {
            "incident_at": "2026-11-20T10:00:00+08:00"})}),
        "ipfixed-appeal-late": letter_context("ipfixed", make_case("ipfixed", "appeal", "collecting", "email", {
            "parent_ref": "RF-000311", "account_id": "mia", "description": "The refund was rejected without a reason.",
        }), known_cases={"RF-000311": replace(make_case("ipfixed", "refund", "rejected", "email", {}),
                                              decided_at=datetime.fromisoformat("2026-11-02T10:00:00+08:00"))},
            complete=True),
    }


SCENARIOS = scenarios()


def extras(template: str, context: dict[str, Any]) -> dict[str, Any]:
    """What some templates need beyond the letter context (as intake/pipeline.py passes it)."""
    missing = [m for m in context["missing"]] or ["amount"]
    return {
        "ask": {"field": missing[0], "problem": "not_a_choice" if missing[0] in context["choices"] else None},
        "status": {"cases": [
            {"id": "RF-000311", "kind": "refund", "status": "queued", "amount": "12.50", "currency": "USD"},
            {"id": "RF-000312", "kind": "refund", "status": "collecting", "amount": None, "currency": None},
            {"id": "AP-000042", "kind": "appeal", "status": "awaiting_customer", "amount": None, "currency": None},
            {"id": "RF-000200", "kind": "refund", "status": "approved", "amount": "8.40", "currency": None},
            {"id": "RF-000201", "kind": "refund", "status": "rejected", "amount": "30", "currency": "CNY"},
            {"id": "RF-000202", "kind": "refund", "status": "withdrawn", "amount": None, "currency": None},
        ]},
        "refused": {"problem": "message has too many MIME parts (more than 100)", "size_limit": 26214400},
        "file_refused": {"filename": f"screen recording{INJECTION}.mp4", "size": 73400320, "limit": 26214400},
        "file_lost": {"filename": f"screen recording{INJECTION}.mp4"},
    }.get(template, {})


def full_context(template: str, scenario: str) -> dict[str, Any]:
    base = SCENARIOS[scenario]
    context = {**base, **extras(template, base)}
    context["letter"] = context
    return context


# --- helpers ------------------------------------------------------------------------------------


def strings_in(value: Any, skip: tuple[str, ...] = ("notices", "letter")) -> set[str]:
    """Every string a context holds (customer values, file names, codes): allowed in any language.
    Finding messages are left out: they are English and must never reach a customer."""
    found: set[str] = set()
    if isinstance(value, str):
        found.add(value)
        found.update(line.strip() for line in value.splitlines())
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in skip:
                found |= strings_in(item, skip)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= strings_in(item, skip)
    return found


def without_context_values(text: str, context: dict[str, Any]) -> str:
    for value in sorted(strings_in(context), key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, " ")
    return text


def english_runs(text: str) -> list[str]:
    return ENGLISH_RUN.findall(text)


def common(language: str) -> Any:
    return environment().get_template(f"{language}/_common.j2").module


# --- the tests ----------------------------------------------------------------------------------


def test_every_english_template_has_a_chinese_one() -> None:
    assert TEMPLATE_NAMES, "no templates found"
    missing = [name for name in SOURCE_FILES if not (ZH_DIR / name).is_file()]
    assert not missing, f"no Chinese version of {missing}"


@pytest.mark.parametrize("name", SOURCE_FILES)
def test_chinese_template_has_the_english_structure(name: str) -> None:
    env = environment()
    en = env.parse((EN_DIR / name).read_text("utf-8"))
    zh = env.parse((ZH_DIR / name).read_text("utf-8"))

    def shape(tree: nodes.Template) -> dict[str, Any]:
        dicts = {}
        for assign in tree.find_all(nodes.Assign):
            if isinstance(assign.node, nodes.Dict):
                dicts[assign.target.name] = sorted(pair.key.value for pair in assign.node.items)
        return {
            "variables": meta.find_undeclared_variables(tree),
            "blocks": sorted(b.name for b in tree.find_all(nodes.Block)),
            "macros": sorted((m.name, tuple(a.name for a in m.args)) for m in tree.find_all(nodes.Macro)),
            "imports": sorted((i.template.value.split("/", 1)[1], i.target, i.with_context) for i in tree.find_all(nodes.Import)),
            "dicts": dicts,
        }

    assert shape(zh) == shape(en)
    for imported in zh.find_all(nodes.Import):
        assert imported.template.value.startswith("zh/"), f"{name} imports {imported.template.value}"


def test_dictionaries_have_the_same_keys() -> None:
    en, zh = common("en"), common("zh")
    for name in ("LABELS", "QUESTIONS", "PROBLEMS", "CHOICES"):
        assert set(getattr(zh, name)) == set(getattr(en, name)), name
        for key, text in getattr(zh, name).items():
            assert HAN.search(text) or text == getattr(en, name)[key], f"{name}[{key!r}] is not translated"
            if text != getattr(en, name)[key]:
                assert not english_runs(text), f"{name}[{key!r}] keeps English: {text!r}"


def test_every_choice_and_notice_code_is_phrased() -> None:
    """A reason code missing from CHOICES, or a visible finding without its own branch, would
    show an internal code or the finding's English message to a Chinese customer."""
    zh = common("zh")
    for preset in ("302ai", "ipfixed"):
        policy = load_preset(preset)
        for version in policy.versions:
            for spec in version.fields:
                if spec.type == "choice":
                    for choice in version.choices_for(spec):
                        assert choice in zh.CHOICES, f"{preset}: no words for choice {choice!r}"
                assert spec.name in zh.LABELS and spec.name in zh.QUESTIONS, spec.name
    for code in VISIBLE_NOTICE_CODES:
        finding = Finding(code, "P302-5", "An English message.", True,
                          {"deadline": "2026-11-20T23:59:59+08:00", "reason": "withdrawal", "threshold": 24})
        text = str(zh.notice(finding.to_dict()))
        assert HAN.search(text) and "An English message" not in text, code


@pytest.mark.skipif(not (EN_DIR / "buttons.j2").is_file(), reason="no button labels yet")
def test_button_labels() -> None:
    """Chat buttons (bot/send.py reads <lang>/buttons.j2): same keys, Chinese words, the
    {field} placeholder kept, short enough for a phone, and every preset choice covered."""
    env = environment()
    en, zh = env.get_template("en/buttons.j2").module, env.get_template("zh/buttons.j2").module
    for name in ("ACTIONS", "FIELDS", "CHOICES", "COMMANDS"):
        assert set(getattr(zh, name)) == set(getattr(en, name)), name
        for key, text in getattr(zh, name).items():
            assert HAN.search(text) or text == getattr(en, name)[key], f"{name}[{key!r}] = {text!r}"
            assert len(text) <= 20, f"{name}[{key!r}] is too long for a button: {text!r}"
    assert zh.EDIT.count("{field}") == 1 and HAN.search(zh.EDIT.format(field="金额"))
    for preset in ("302ai", "ipfixed"):
        for version in load_preset(preset).versions:
            for spec in version.fields:
                assert spec.name in zh.FIELDS, spec.name
                if spec.type == "choice":
                    assert set(version.choices_for(spec)) <= set(zh.CHOICES), preset
    # The chat texts name the buttons; the zh words must be the start of the zh button label.
    assert zh.ACTIONS["done_evidence"].startswith("完成") and zh.ACTIONS["confirm"].lstrip("✅ ").startswith("确认")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_renders_in_both_languages(template: str, scenario: str) -> None:
    context = full_context(template, scenario)
    en_subject, en_body = render(template, "en", context)
    zh_subject, zh_body = render(template, "zh", context)
    case_id = context["case_id"]

    for subject in (en_subject, zh_subject):
        assert subject and "\n" not in subject and "\r" not in subject
    if case_id in en_subject:
        assert case_id in zh_subject
        assert zh_subject.startswith(f"[{case_id}]") == en_subject.startswith(f"[{case_id}]")
    assert HAN.search(zh_subject), zh_subject
    assert not english_runs(without_context_values(zh_subject, context)), zh_subject

    assert HAN.search(zh_body), zh_body
    zh_plain = without_context_values(zh_body, context)
    en_plain = without_context_values(en_body, context)
    leftovers = [run for run in english_runs(en_plain) if run in zh_body]
    assert not leftovers, f"English left in the zh {template}: {leftovers}\n{zh_body}"
    assert not english_runs(zh_plain), f"English in the zh {template}: {english_runs(zh_plain)}\n{zh_body}"
    for notice in context["notices"]:
        assert notice["message"] not in zh_body and notice["message"] not in en_body


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("template", [t for t in ("ack", "queued", "missing") if t in TEMPLATE_NAMES])
def test_letters_give_the_deadline_and_review_dates(template: str, scenario: str) -> None:
    context = full_context(template, scenario)
    for language in ("en", "zh"):
        _, body = render(template, language, context)
        for deadline in context["deadlines"]:
            assert deadline["date"] in body and deadline["clause"] in body, (language, deadline)
        if context["review_due"]:
            assert context["review_due"] in body and context["review_clause"] in body, language
        if template in ("ack", "queued"):
            assert context["case_id"] in body


def test_scenarios_cover_the_dates_and_notices() -> None:
    """Guard the fixtures: the tests above only mean something if these show up."""
    assert any(s["review_due"] for s in SCENARIOS.values())
    assert {d["code"] for s in SCENARIOS.values() for d in s["deadlines"]} >= {"apply", "reapply", "appeal", "mistaken_purchase"}
    assert {n["code"] for s in SCENARIOS.values() for n in s["notices"]} == VISIBLE_NOTICE_CODES
    assert any(s["missing"] and s["deadlines"] for s in SCENARIOS.values())


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ack_fill_in_block_names_every_missing_field(scenario: str) -> None:
    context = full_context("ack", scenario)
    for language, colon in (("en", ":"), ("zh", "：")):
        labels = common(language).LABELS
        _, body = render("ack", language, context)
        lines = body.splitlines()
        for name in context["missing"]:
            assert f"- {labels[name]}" in lines, (language, name)
            if name == "evidence":
                continue
            # The fill-in line is the label, the choices (if any) in brackets, then the colon.
            fill = [line for line in lines if line.startswith(labels[name]) and line.rstrip().endswith(colon)]
            assert fill, f"{language}: no fill-in line for {name}\n{body}"
            if name in context["choices"]:
                assert all(choice in fill[0] for choice in context["choices"][name])
        if language == "zh":
            for name in context["missing"]:
                assert not any(line.startswith(labels[name] + ":") for line in lines), "ASCII colon in a zh fill-in line"
        if context["review_due"]:
            assert context["review_due"] in body


@pytest.mark.parametrize("field", sorted(set(common("en").QUESTIONS) | {"confirm", f"amount{INJECTION}"}))
@pytest.mark.parametrize("problem", [None, *sorted(common("en").PROBLEMS)])
def test_ask_every_field_and_problem(field: str, problem: str | None) -> None:
    """The chat question for every field, with every problem; `field` comes from a button's
    callback data (edit:<field>), so a forged one must not break the subject either."""
    for scenario in ("302ai-incomplete", "ipfixed-mistaken", "302ai-complete"):
        context = {**full_context("ask", scenario), "field": field, "problem": problem}
        context["letter"] = context
        for language in ("en", "zh"):
            subject, body = render("ask", language, context)
            assert "\n" not in subject and "\r" not in subject
            assert context["case_id"] in subject
            if language == "zh" and field in common("zh").QUESTIONS:
                assert HAN.search(body)
                assert not english_runs(without_context_values(body, context)), body


@pytest.mark.parametrize("language", ["en", "zh"])
def test_header_injection_never_reaches_a_subject(language: str) -> None:
    assert sum(any(INJECTION in v for v in s["fields"].values()) for s in SCENARIOS.values()) >= 3
    for template in TEMPLATE_NAMES:
        for scenario in SCENARIOS:
            context = full_context(template, scenario)
            subject, _ = render(template, language, context)
            assert "\r" not in subject and "\n" not in subject, (template, scenario, subject)
            assert not re.search(r"(?m)^Bcc:", subject)


def test_status_without_cases() -> None:
    for language in ("en", "zh"):
        subject, body = render("status", language, {"cases": [], "policy_name": "302.AI Refund Policy"})
        assert "/refund" in body and subject
    _, body = render("status", "zh", {"cases": [], "policy_name": "x"})
    assert HAN.search(body)


def test_context_matches_dialog_letter() -> None:
    """When the dialog module imports, its `_letter()` keys are the ones these tests build."""
    dialog = pytest.importorskip("refunddesk.policy.dialog", exc_type=ImportError)
    policy = load_preset("302ai")
    case = make_case("302ai", "refund", "collecting", "email", {"amount": "12.50"})
    ctx = Context(policy, CALENDAR)
    letter = dialog._letter(case, policy.version_at(NOW), ctx, NOW)
    ours = set(SCENARIOS["302ai-incomplete"]) - {"style", "channel", "letter"}
    assert set(letter) == ours
