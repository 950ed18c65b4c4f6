"""Deadlines and due dates: a policy window laid on the working-day calendar in the policy's zone.

Customer-facing deadlines end at the close of their last day (23:59:59 local time), because
"within 7 working days" is read by people as "up to and including the seventh day".
Review due dates keep the time of day of the moment they count from, as helpdesk SLAs do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .calendar import WorkingCalendar

END_OF_DAY = time(23, 59, 59)


@dataclass(frozen=True)
class Deadline:
    at: datetime
    covered: bool  # False when the calendar had no official data for some day it counted over

    @property
    def day(self) -> date:
        return self.at.date()


def add_period(
    calendar: WorkingCalendar,
    tz: ZoneInfo,
    origin: datetime,
    length: int,
    unit: str,
    *,
    end_of_day: bool,
) -> Deadline:
    local = origin.astimezone(tz)
    if unit == "hours":
        return Deadline(local + timedelta(hours=length), True)
    if unit == "calendar_days":
        day = local.date() + timedelta(days=length)
        covered = True
    elif unit == "working_days":
        day = calendar.add_working_days(local.date(), length)
        covered = not calendar.uncovered_between(local.date(), day)
    else:
        raise ValueError(f"unknown period unit {unit!r}")
    moment = datetime.combine(day, END_OF_DAY if end_of_day else local.timetz().replace(tzinfo=None), tz)
    return Deadline(moment, covered)


def window_deadline(calendar: WorkingCalendar, tz: ZoneInfo, origin: datetime, length: int, unit: str) -> Deadline:
    """The last moment a customer may act (apply, appeal) under a policy window."""
    return add_period(calendar, tz, origin, length, unit, end_of_day=True)


def review_due(calendar: WorkingCalendar, tz: ZoneInfo, completed: datetime, length: int, unit: str) -> Deadline:
    """When the agents' review is due, counted from the moment the case became complete."""
    return add_period(calendar, tz, completed, length, unit, end_of_day=False)
