"""The words the console shows agents in place of the keys that the code, the store and the JSON
use, and times written with their zone.

The labels are data, in templates/console/labels.toml beside the console's pages. A key without
a label (a code in an operator's own policy file, say) is shown as its words, never hidden.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import datetime, tzinfo
from functools import cache
from importlib import resources
from typing import Any

# Details shown inside another's row: the currency with the amount, and the flag that says
# incident_at is a day without a time of day.
SHOWN_WITH = {"currency": "amount", "incident_date_only": "incident_at"}
ISO_MOMENT = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$")
ISO_DAY = re.compile(r"^\d{4}-\d\d-\d\d$")


@cache
def table() -> dict[str, dict[str, str]]:
    text = resources.files("refunddesk.templates").joinpath("console/labels.toml").read_text("utf-8")
    return tomllib.loads(text)


def label(group: str, key: Any) -> str:
    if key is None or key == "":
        return "—"
    return table()[group].get(str(key)) or words(str(key))


def words(key: str) -> str:
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def zone_text(moment: datetime) -> str:
    """The moment's offset as `UTC`, `UTC+8` or `UTC+5:30`: an abbreviation such as CST names
    three different zones."""
    offset = moment.utcoffset()
    minutes = round(offset.total_seconds() / 60) if offset is not None else 0
    if not minutes:
        return "UTC"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{'+' if minutes > 0 else '-'}{hours}" + (f":{rest:02d}" if rest else "")


def time_text(moment: datetime, zone: tzinfo, with_time: bool = True) -> str:
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {zone_text(local)}" if with_time else f"{local:%Y-%m-%d}"


def field_text(name: str, value: Any, fields: Mapping[str, Any], kind: str | None, zone: tzinfo) -> str:
    """A detail's value as an agent reads it; `kind` is its type in the policy (choice, money,
    moment, hours, percent, text, case_ref) or None for a detail the policy does not ask for."""
    if value is None or value == "":
        return "—"
    text = str(value)
    if name == "amount":
        return f"{text} {fields['currency']}" if fields.get("currency") else text
    if kind == "choice":
        return label("choices", text)
    if kind == "hours":
        return f"{text} h"
    if kind == "percent":
        return f"{text} %"
    if ISO_DAY.match(text):
        return text
    if kind == "moment" or ISO_MOMENT.match(text):
        if name == "incident_at" and fields.get("incident_date_only"):
            # The customer named a day only: its date as they gave it, in no zone.
            return f"{text[:10]} (day only, no time given)"
        return time_text(datetime.fromisoformat(text), zone)
    return text


def detail_text(key: str, value: Any, data: Mapping[str, Any], zone: tzinfo, kinds: Mapping[str, str]) -> str:
    """One detail of an event in the log, by what its key says it is; `kinds` are the types of
    the policy's fields, so that a chosen reason reads as its label."""
    if isinstance(value, list):
        return ", ".join(detail_text(key, item, data, zone, kinds) for item in value) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{words(str(k))}: {v}" for k, v in value.items()) or "—"
    if key == "field":
        return label("fields", value)
    if key in ("value", "from", "to", "others") and data.get("field"):
        name = str(data["field"])
        return field_text(name, value, {}, kinds.get(name), zone)
    groups = {"channel": "channels", "kind": "kinds", "flags": "flags", "template": "letter_templates"}
    if key in groups:
        return label(groups[key], value)
    if key == "reason":
        return label("reject_reasons", value)
    text = "—" if value is None or value == "" else str(value)
    return time_text(datetime.fromisoformat(text), zone) if ISO_MOMENT.match(text) else text


def event_details(data: Mapping[str, Any], zone: tzinfo, kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(label("event_details", key), detail_text(key, value, data, zone, kinds)) for key, value in data.items()]


def finding_text(message: str, params: Mapping[str, Any]) -> str:
    """A finding's sentence with the keys it quotes from its parameters (the missing field,
    the stated reason) written as their labels."""
    for key, group in (("field", "fields"), ("reason", "choices")):
        code = params.get(key)
        if isinstance(code, str) and code:
            message = re.sub(rf"(?<![\w-]){re.escape(code)}(?![\w-])", label(group, code), message)
    return message
