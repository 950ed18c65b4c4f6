"""Timestamps as the store writes them: ISO 8601 in UTC, so text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_stamp(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def required_stamp(text: str) -> datetime:
    """A stamp that is there: from a NOT NULL column, or one its query selected as set."""
    return datetime.fromisoformat(text)
