"""Refund policies as data: loading a preset or an operator's file, and picking the version in force.

A policy file holds one or more versions, each complete in itself, with the date it takes
effect (PIF-11: a case is judged by the version in force at its purchase date). Loading
validates the shape once, so the rules and the dialog can trust what they read.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .model import Case

PRESETS = ("302ai", "ipfixed")
FIELD_TYPES = ("choice", "money", "moment", "text", "case_ref", "hours", "percent")
WINDOW_UNITS = ("working_days", "calendar_days", "hours")
WINDOW_ORIGINS = ("incident", "purchase", "decision")


class PolicyError(ValueError):
    """The policy file is malformed; the message names the file and the offending entry."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kinds: tuple[str, ...]
    type: str
    clause: str
    choices: tuple[str, ...] = ()
    when_reason: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReasonSpec:
    code: str
    refundable: bool
    clause: str
    keywords: tuple[str, ...] = ()
    min_outage_hours: int | None = None


@dataclass(frozen=True)
class WindowSpec:
    code: str
    kinds: tuple[str, ...]
    length: int
    unit: str
    origin: str
    clause: str
    blocking: bool = True
    when_reason: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyVersion:
    version: str
    effective: date
    fields: tuple[FieldSpec, ...]
    reasons: tuple[ReasonSpec, ...]
    windows: tuple[WindowSpec, ...]
    evidence: dict[str, Any]
    review: dict[str, dict[str, Any]]
    acknowledgement: dict[str, Any]
    decision: dict[str, Any]
    reject_reasons: dict[str, str]
    signals: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    special: dict[str, Any] = field(default_factory=dict)

    def fields_for(self, kind: str, reason: str | None = None) -> tuple[FieldSpec, ...]:
        """The required fields for a case kind, in asking order; conditional ones only when they apply."""
        return tuple(f for f in self.fields if kind in f.kinds and (not f.when_reason or reason in f.when_reason))

    def reason(self, code: str | None) -> ReasonSpec | None:
        return next((r for r in self.reasons if r.code == code), None)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def choices_for(self, spec: FieldSpec) -> tuple[str, ...]:
        if spec.name == "reason":
            return tuple(r.code for r in self.reasons)
        return spec.choices

    def evidence_required(self, kind: str) -> int:
        return int(self.evidence.get("minimum", 0)) if kind in self.evidence.get("kinds", ()) else 0


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    timezone: ZoneInfo
    country: str
    currency: str
    versions: tuple[PolicyVersion, ...]

    def version_at(self, moment: datetime | date | None) -> PolicyVersion:
        """The version in force on that date (PIF-11); the newest when the date is unknown."""
        if moment is None:
            return self.versions[-1]
        day = moment.astimezone(self.timezone).date() if isinstance(moment, datetime) else moment
        in_force = [v for v in self.versions if v.effective <= day]
        return in_force[-1] if in_force else self.versions[0]

    def version_named(self, name: str) -> PolicyVersion:
        return next((v for v in self.versions if v.version == name), self.versions[-1])

    def version_of(self, case: Case) -> PolicyVersion:
        """The version the case was judged by (PIF-11), so a letter quotes the terms that applied."""
        return self.version_named(case.policy_version) if case.policy_version else self.version_at(case.created_at)


def load_preset(name: str) -> Policy:
    if name not in PRESETS:
        raise PolicyError(f"unknown policy preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("refunddesk.policy").joinpath(f"presets/{name}.toml").read_text("utf-8")
    return parse_policy(tomllib.loads(text), source=f"preset {name}")


def load_policy_file(path: str | Path) -> Policy:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read policy: {exc}") from exc
    return parse_policy(data, source=str(path))


def parse_policy(data: dict[str, Any], *, source: str) -> Policy:
    def need(table: dict[str, Any], key: str, where: str) -> Any:
        if key not in table:
            raise PolicyError(f"{source}: {where} is missing the key {key!r}")
        return table[key]

    versions = [parse_version(v, source, index) for index, v in enumerate(need(data, "versions", "the policy"))]
    if not versions:
        raise PolicyError(f"{source}: the policy has no [[versions]]")
    versions.sort(key=lambda v: v.effective)
    try:
        tz = ZoneInfo(need(data, "timezone", "the policy"))
    except (KeyError, ValueError) as exc:
        raise PolicyError(f"{source}: unknown timezone {data.get('timezone')!r}") from exc
    return Policy(
        id=str(need(data, "id", "the policy")),
        name=str(data.get("name", data["id"])),
        timezone=tz,
        country=str(data.get("country", "CN")),
        currency=str(data.get("currency", "USD")),
        versions=tuple(versions),
    )


def parse_version(raw: dict[str, Any], source: str, index: int) -> PolicyVersion:
    where = f"{source}: versions[{index}]"
    try:
        fields = tuple(
            FieldSpec(
                name=f["name"],
                kinds=tuple(f["kinds"]),
                type=f["type"],
                clause=f["clause"],
                choices=tuple(f.get("choices", ())),
                when_reason=tuple(f.get("when_reason", ())),
            )
            for f in raw["fields"]
        )
        reasons = tuple(
            ReasonSpec(
                code=r["code"],
                refundable=bool(r["refundable"]),
                clause=r["clause"],
                keywords=tuple(k.lower() for k in r.get("keywords", ())),
                min_outage_hours=r.get("min_outage_hours"),
            )
            for r in raw["reasons"]
        )
        windows = tuple(
            WindowSpec(
                code=w["code"],
                kinds=tuple(w["kinds"]),
                length=int(w["length"]),
                unit=w["unit"],
                origin=w["from"],
                clause=w["clause"],
                blocking=bool(w.get("blocking", True)),
                when_reason=tuple(w.get("when_reason", ())),
            )
            for w in raw.get("windows", ())
        )
        effective = raw["effective"]
        version = PolicyVersion(
            version=str(raw["version"]),
            effective=effective if isinstance(effective, date) else date.fromisoformat(str(effective)),
            fields=fields,
            reasons=reasons,
            windows=windows,
            evidence=dict(raw.get("evidence", {})),
            review=dict(raw["review"]),
            acknowledgement=dict(raw.get("acknowledgement", {"hours": 24, "clause": ""})),
            decision=dict(raw.get("decision", {})),
            reject_reasons={r["code"]: r["clause"] for r in raw.get("reject_reasons", ())},
            signals=dict(raw.get("signals", {})),
            limits=dict(raw.get("limits", {})),
            special=dict(raw.get("special", {})),
        )
    except KeyError as exc:
        raise PolicyError(f"{where} is missing the key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"{where}: {exc}") from exc
    for spec in version.fields:
        if spec.type not in FIELD_TYPES:
            raise PolicyError(f"{where}: field {spec.name!r} has unknown type {spec.type!r}")
    for window in version.windows:
        if window.unit not in WINDOW_UNITS:
            raise PolicyError(f"{where}: window {window.code!r} has unknown unit {window.unit!r}")
        if window.origin not in WINDOW_ORIGINS:
            raise PolicyError(f"{where}: window {window.code!r} counts from unknown {window.origin!r}")
    for kind, review in version.review.items():
        if review.get("unit") not in WINDOW_UNITS:
            raise PolicyError(f"{where}: review.{kind} has unknown unit {review.get('unit')!r}")
    return version
