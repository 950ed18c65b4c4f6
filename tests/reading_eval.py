"""Scoring a field reader on the evaluation set, as the customer's mail really reaches it.

One scorer for tests/test_extract_accuracy.py and bench/reading_libraries.py. Each entry of the
set (tests/data/reading_eval.json, written by people who did not read the reader) becomes a
real MIME mail: its subject, a text/plain or a text/html-only body in UTF-8. The project's own
parser (intake/email/parse.py) turns the bytes into an InboundMessage, and what the dialog
gives the field reader (policy/dialog.py `reading_text`: the customer's own words, HTML
reduced to text, quotes set aside, a forwarded message below them) is what a reader gets,
with the entry's `now` and desk time zone.

The rules, kept from the first accuracy test: a field is right when it matches exactly (a null
expected and nothing read is right too; amounts compare as decimals); an entry labelled
date-only compares dates, one with a time compares the moment and must not be read as a date
only. A value read where the label is null is "invented": that must never happen.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from refunddesk.addresses import Addresses
from refunddesk.intake.email.parse import parse_mail
from refunddesk.policy.dialog import reading_text

DEFAULT_SET = Path(__file__).parent / "data" / "reading_eval.json"
SCORED = ("amount", "currency", "incident_at")
LANGUAGES = ("en", "zh", "mixed")
REFUNDS, APPEALS = "refunds@desk.test", "appeals@desk.test"

Reader = Callable[[str, datetime, ZoneInfo], dict]


@dataclass(frozen=True)
class Sample:
    """One entry as a reader meets it."""
    entry: dict
    text: str  # InboundMessage.text of the parsed mail
    now: datetime
    tz: ZoneInfo

    @property
    def id(self) -> str:
        return self.entry["id"]

    @property
    def lang(self) -> str:
        return self.entry.get("lang", "en")


def load(paths: Iterable[Path | str] = (DEFAULT_SET,)) -> list[dict]:
    """The entries of one or several set files, in order; ids must stay unique."""
    entries = [e for p in paths for e in json.loads(Path(p).read_text(encoding="utf-8"))]
    ids = [e["id"] for e in entries]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"duplicate ids in the set: {duplicated[:10]}")
    return entries


def mail_bytes(entry: dict) -> bytes:
    """The entry as the raw mail a customer's client would send."""
    msg = EmailMessage()
    msg["From"] = f"customer-{entry['id']}@customer.test"
    msg["To"] = REFUNDS
    msg["Subject"] = entry.get("subject") or ""
    msg["Date"] = format_datetime(datetime.fromisoformat(entry["now"]))
    msg["Message-ID"] = f"<{entry['id']}@customer.test>"
    if entry.get("html") is not None:
        msg.set_content(entry["html"], subtype="html", charset="utf-8")
    else:
        msg.set_content(entry["text"], charset="utf-8")
    return msg.as_bytes()


def sample(entry: dict) -> Sample:
    now = datetime.fromisoformat(entry["now"])
    meta = {"mail_from": f"customer-{entry['id']}@customer.test", "rcpt_tos": [REFUNDS]}
    parsed = parse_mail(mail_bytes(entry), meta, Addresses(REFUNDS, APPEALS), now)
    return Sample(entry, reading_text(parsed.inbound), now, ZoneInfo(entry.get("tz") or "Asia/Shanghai"))


def _date_only(value) -> bool:
    return value in (True, 1, "1", "true")


def _decimal(value) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def same(name: str, expected: dict, read: dict) -> bool:
    want, got = expected.get(name), read.get(name)
    if want is None or got is None:
        return want is None and got is None
    if name == "amount":
        return _decimal(want) is not None and _decimal(want) == _decimal(got)
    if name == "incident_at":
        try:
            got_at = datetime.fromisoformat(got)
        except (TypeError, ValueError):
            return False
        want_at = datetime.fromisoformat(want)
        if _date_only(expected.get("incident_date_only")):
            return want_at.date() == got_at.date()
        return got_at.tzinfo is not None and want_at == got_at and not _date_only(read.get("incident_date_only"))
    return want == got


@dataclass
class Score:
    """Counts per (field, language), and the lines that name every miss."""
    fields: tuple[str, ...]
    right: dict = field(default_factory=lambda: defaultdict(int))  # (field, lang) -> n right
    total: dict = field(default_factory=lambda: defaultdict(int))  # (field, lang) -> n scored
    wrong: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)
    invented_by_field: dict = field(default_factory=lambda: defaultdict(int))
    invented_in: dict = field(default_factory=lambda: defaultdict(int))  # (field, lang) -> n invented
    seconds: float = 0.0  # spent in the reader alone
    mails: int = 0

    def percent(self, name: str, lang: str | None = None) -> float | None:
        langs = LANGUAGES if lang is None else (lang,)
        total = sum(self.total[name, la] for la in langs)
        return None if not total else 100 * sum(self.right[name, la] for la in langs) / total

    def ms_per_mail(self) -> float:
        return 1000 * self.seconds / max(self.mails, 1)

    def table(self) -> str:
        lines = [f"{'field':<12}" + "".join(f"{la:>8}" for la in (*LANGUAGES, "all")) + f"{'invented':>10}"]
        for name in self.fields:
            cells = [self.percent(name, la) for la in (*LANGUAGES, None)]
            lines.append(f"{name:<12}" + "".join("       -" if c is None else f"{c:>8.1f}" for c in cells)
                         + f"{self.invented_by_field[name]:>10}")
        return "\n".join(lines)


def score(samples: Iterable[Sample], reader: Reader, fields: tuple[str, ...] = SCORED) -> Score:
    """Run `reader` on every sample; a field an entry does not label is not scored for it."""
    result = Score(fields)
    for s in samples:
        started = time.perf_counter()
        read = reader(s.text, s.now, s.tz) or {}
        result.seconds += time.perf_counter() - started
        result.mails += 1
        expected = s.entry["expected"]
        for name in fields:
            if name not in expected:
                continue
            result.total[name, s.lang] += 1
            if same(name, expected, read):
                result.right[name, s.lang] += 1
                continue
            line = f"{s.id} {name}: expected {expected[name]!r}, read {read.get(name)!r}"
            result.wrong.append(line)
            if expected[name] is None:
                result.invented.append(line)
                result.invented_by_field[name] += 1
                result.invented_in[name, s.lang] += 1
    return result


if __name__ == "__main__":  # python tests/reading_eval.py [set.json ...]: refunddesk's own score
    import sys

    from refunddesk.policy.extract import read_fields

    entries = load(sys.argv[1:] or (DEFAULT_SET,))
    result = score([sample(e) for e in entries], read_fields)
    print(f"{len(entries)} mails, {result.ms_per_mail():.2f} ms per mail\n{result.table()}")
    print("wrong:\n  " + "\n  ".join(result.wrong) if result.wrong else "nothing wrong")
