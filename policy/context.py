"""What the pure core may know beyond the case itself, gathered by the caller before a step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .calendar import WorkingCalendar
from .model import Case
from .preset import Policy


@dataclass(frozen=True)
class History:
    """Signals about the contact and the evidence from other cases (P302-14, PIF-2)."""

    recent_requests_from_contact: int = 0
    evidence_elsewhere: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    policy: Policy
    calendar: WorkingCalendar
    known_cases: Mapping[str, Case] = field(default_factory=dict)
    history: History = field(default_factory=History)
