"""The working-day calendar behind every deadline that says "working days" (P302-5, P302-10, PIF-4).

Why it is layered: no single source knows China's official schedule for every year. The State
Council publishes each year's public holidays and make-up working days (调休: a Saturday or
Sunday that is a working day) late in the year before, and the libraries catch up later:

1. `chinese_calendar` has the official schedule, make-up days included, for the years its data
   covers (2004-2026 in 1.11) and raises NotImplementedError outside them.
2. `holidays` has the official schedule, make-up days included, for the years whose notice it
   transcribed (2001-2026 in 0.109). For other years up to 2100 it still computes the statutory
   holidays by rule, but silently without make-up days: an estimate, not the schedule.
3. Beyond both there is only the weekend.

The operator's override file (the published notice, typed in) wins over all of them. Every day
gets an answer, never an exception; `is_covered` says whether that answer rests on an official
schedule, so the caller can record a warning next to a deadline computed from an estimate.

Pure: no clock, no network; only `from_override_file` reads the disk.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Set
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import ModuleType

import chinese_calendar

SOURCE_CHINESE_CALENDAR = "chinese_calendar"
SOURCE_HOLIDAYS = "holidays"
SOURCE_HOLIDAYS_ESTIMATE = "holidays (estimated, no make-up working days)"
SOURCE_WEEKENDS = "weekends only"

_OVERRIDE_KEYS = ("holidays", "working_days")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class CalendarGap(Exception):
    """Raised by `require_covered` when a range touches years no source knows officially."""

    def __init__(self, years: list[int]) -> None:
        self.years = years
        listed = ", ".join(str(year) for year in years)
        super().__init__(f"no official working-day calendar for {listed}; add an override file")


@dataclass(frozen=True)
class _YearSchedule:
    working_days: frozenset[date]
    official: bool
    source: str


class WorkingCalendar:
    """Working days of one country, with operator overrides that win over every source."""

    def __init__(
        self,
        country: str = "CN",
        *,
        extra_holidays: Iterable[date | str] = (),
        extra_working_days: Iterable[date | str] = (),
    ) -> None:
        self.country = country.upper()
        # China is known to both sources; another country is checked against the library's registry
        # (building its holidays would import every country the library knows, ~0.1 s).
        if self.country != "CN" and self.country not in _holidays_library().registry.EntityLoader.get_country_codes():
            raise ValueError(f"no holiday data for country {country!r}")
        self._extra_holidays = frozenset(_as_date(day, "extra_holidays") for day in extra_holidays)
        self._extra_working_days = frozenset(_as_date(day, "extra_working_days") for day in extra_working_days)
        _reject_conflicts(self._extra_holidays, self._extra_working_days, where="")
        self._schedules: dict[int, _YearSchedule] = {}

    @classmethod
    def from_override_file(cls, path: str | Path, country: str = "CN") -> WorkingCalendar:
        """Read `holidays = [...]` and `working_days = [...]` (ISO dates) from a TOML file."""
        path = Path(path)
        try:
            with path.open("rb") as file:
                content = tomllib.load(file)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a valid TOML file: {error}") from error
        # A misspelt key would otherwise silently drop the operator's dates.
        unknown = sorted(set(content) - set(_OVERRIDE_KEYS))
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; expected holidays and working_days")
        parsed: dict[str, list[date]] = {}
        for key in _OVERRIDE_KEYS:
            entries = content.get(key, [])
            if not isinstance(entries, list):
                raise ValueError(f'{path}: {key} must be a list of dates like ["2027-01-01"], got {entries!r}')
            parsed[key] = [_as_date(entry, f"{path}: {key}[{index}]") for index, entry in enumerate(entries)]
        _reject_conflicts(set(parsed["holidays"]), set(parsed["working_days"]), where=f"{path}: ")
        return cls(
            country,
            extra_holidays=parsed["holidays"],
            extra_working_days=parsed["working_days"],
        )

    def is_working_day(self, day: date) -> bool:
        day = _require_date(day)
        if day in self._extra_working_days:
            return True
        if day in self._extra_holidays:
            return False
        return day in self._schedule(day.year).working_days

    def is_covered(self, day: date) -> bool:
        day = _require_date(day)
        if day in self._extra_working_days or day in self._extra_holidays:
            return True
        return self._schedule(day.year).official

    def source_for_year(self, year: int) -> str:
        """Which layer answers for `year` (one of the SOURCE_* names), for warnings and logs."""
        return self._schedule(year).source

    def add_working_days(self, start: date, count: int) -> date:
        """The count-th working day strictly after `start`; `start` itself never counts."""
        start = _require_date(start)
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        day = start
        while count:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count -= 1
        return day

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in (start, end]: the inverse of `add_working_days`."""
        start, end = _require_date(start), _require_date(end)
        days = (start + timedelta(days=offset) for offset in range(1, (end - start).days + 1))
        return sum(1 for day in days if self.is_working_day(day))

    def uncovered_between(self, start: date, end: date) -> list[int]:
        """Years in [start, end] answered from an estimate; override dates do not cover a year."""
        start, end = _require_date(start), _require_date(end)
        years = range(start.year, end.year + 1)
        return [year for year in years if not self._schedule(year).official]

    def require_covered(self, start: date, end: date) -> None:
        """Raise CalendarGap if [start, end] touches a year without an official schedule."""
        years = self.uncovered_between(start, end)
        if years:
            raise CalendarGap(years)

    def _schedule(self, year: int) -> _YearSchedule:
        # A whole year is computed at once and kept: a 30-working-day deadline then costs a few
        # dozen set lookups instead of a few dozen library calls.
        schedule = self._schedules.get(year)
        if schedule is None:
            schedule = self._schedules[year] = self._load_year(year)
        return schedule

    def _load_year(self, year: int) -> _YearSchedule:
        if self.country == "CN":
            official = _chinese_calendar_working_days(year)
            if official is not None:
                return _YearSchedule(official, True, SOURCE_CHINESE_CALENDAR)
        known = _holidays_library().country_holidays(self.country, years=year, expand=False)
        # is_working_day applies the country's own weekend and any make-up days it knows.
        working_days = frozenset(day for day in _days_of(year) if known.is_working_day(day))
        if not known:
            return _YearSchedule(working_days, False, SOURCE_WEEKENDS)
        if self.country == "CN" and not any(day.year == year for day in known.weekend_workdays):
            # China always moves weekends around its holidays; a year without a single make-up
            # day is one whose official notice `holidays` has not transcribed.
            return _YearSchedule(working_days, False, SOURCE_HOLIDAYS_ESTIMATE)
        return _YearSchedule(working_days, True, SOURCE_HOLIDAYS)


def _holidays_library() -> ModuleType:
    # Imported on first use: `holidays` costs ~40 ms of imports, and the commands that list or show
    # cases never ask about a year beyond chinese_calendar's data.
    import holidays  # noqa: PLC0415
    import holidays.registry  # noqa: PLC0415

    return holidays


def _chinese_calendar_working_days(year: int) -> frozenset[date] | None:
    try:
        return frozenset(day for day in _days_of(year) if chinese_calendar.is_workday(day))
    except NotImplementedError:  # the year is outside the data it ships
        return None


def _days_of(year: int) -> list[date]:
    first = date(year, 1, 1)
    return [first + timedelta(days=offset) for offset in range((date(year + 1, 1, 1) - first).days)]


def _require_date(value: object) -> date:
    # A datetime is refused rather than truncated: the caller must first convert it to the
    # policy's time zone, or a late-evening UTC time lands on the wrong calendar day.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"expected a date in the policy's time zone, got {value!r}")
    return value


def _as_date(value: object, where: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # TOML's bare 2027-01-01 arrives as a date already
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f'{where} = {value!r} is not a date like "2027-01-01"')


def _reject_conflicts(holidays: Set[date], working_days: Set[date], where: str) -> None:
    both = sorted(holidays & working_days)
    if both:
        listed = ", ".join(day.isoformat() for day in both)
        raise ValueError(f"{where}{listed} listed both as a holiday and as a working day")
