"""The working-day calendar: official Chinese schedules, the gaps after them, operator overrides.

Expected dates were read from chinese_calendar 1.11 and holidays 0.109 (which agree on every day
of 2026), not typed from memory.
"""
from datetime import date, datetime, timedelta

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refunddesk.policy.calendar import (
    SOURCE_CHINESE_CALENDAR,
    SOURCE_HOLIDAYS,
    SOURCE_HOLIDAYS_ESTIMATE,
    SOURCE_WEEKENDS,
    CalendarGap,
    WorkingCalendar,
)

CHINA = WorkingCalendar()


@pytest.mark.parametrize(
    "start, count, expected, why",
    [
        # National Day 2026: Oct 1-7 off; Sun Sep 20 and Sat Oct 10 are make-up working days.
        (date(2026, 9, 30), 7, date(2026, 10, 15), "Oct 8, 9, Sat 10, 12, 13, 14, 15"),
        (date(2026, 9, 30), 1, date(2026, 10, 8), "first day back after the golden week"),
        (date(2026, 10, 9), 1, date(2026, 10, 10), "Saturday Oct 10 is a make-up working day"),
        (date(2026, 9, 19), 7, date(2026, 9, 29), "Sun Sep 20 works; Fri Sep 25 is Mid-Autumn"),
        # Spring Festival 2026: Feb 15-23 off; Sat Feb 14 and Sat Feb 28 are make-up working days.
        (date(2026, 2, 13), 7, date(2026, 3, 2), "Sat 14, then 24, 25, 26, 27, Sat 28, Mar 2"),
        (date(2026, 2, 14), 1, date(2026, 2, 24), "nine days off after the make-up Saturday"),
        (date(2026, 2, 16), 5, date(2026, 2, 28), "a start inside the holiday"),
        # A plain March week with no holiday.
        (date(2026, 3, 9), 5, date(2026, 3, 16), "Monday plus five is next Monday"),
        (date(2026, 3, 13), 1, date(2026, 3, 16), "Friday plus one is Monday"),
        (date(2026, 3, 14), 1, date(2026, 3, 16), "Saturday plus one is Monday"),
        (date(2026, 3, 14), 7, date(2026, 3, 24), "Saturday start: the weekend never counts"),
        (date(2026, 3, 15), 7, date(2026, 3, 24), "Sunday start gives the same deadline"),
    ],
)
def test_add_working_days_in_2026(start, count, expected, why):
    assert CHINA.add_working_days(start, count) == expected, why


@pytest.mark.parametrize(
    "day, working",
    [
        (date(2026, 10, 1), False),  # National Day
        (date(2026, 10, 7), False),  # last day of the golden week, a Wednesday
        (date(2026, 10, 8), True),
        (date(2026, 9, 20), True),  # Sunday make-up working day
        (date(2026, 10, 10), True),  # Saturday make-up working day
        (date(2026, 9, 25), False),  # Mid-Autumn Festival, a Friday
        (date(2026, 2, 14), True),  # Saturday make-up working day
        (date(2026, 2, 17), False),  # Spring Festival
        (date(2026, 2, 23), False),  # a Monday inside the Spring Festival break
        (date(2026, 2, 28), True),  # Saturday make-up working day
        (date(2026, 1, 4), True),  # Sunday make-up for New Year
        (date(2026, 3, 11), True),
        (date(2026, 3, 14), False),
    ],
)
def test_official_2026_days(day, working):
    assert CHINA.is_working_day(day) is working
    assert CHINA.is_covered(day)


def test_both_libraries_agree_on_2026():
    library = holidays.country_holidays("CN", years=2026, expand=False)
    first = date(2026, 1, 1)
    for day in (first + timedelta(days=offset) for offset in range(365)):
        assert CHINA.is_working_day(day) is library.is_working_day(day), day


@pytest.mark.parametrize(
    "year, source, covered",
    [
        (1900, SOURCE_WEEKENDS, False),
        (1990, SOURCE_HOLIDAYS_ESTIMATE, False),  # statutory days only, no make-up days
        (2003, SOURCE_HOLIDAYS, True),  # before chinese_calendar's data, transcribed by holidays
        (2004, SOURCE_CHINESE_CALENDAR, True),
        (2026, SOURCE_CHINESE_CALENDAR, True),
        (2027, SOURCE_HOLIDAYS_ESTIMATE, False),
        (2031, SOURCE_HOLIDAYS_ESTIMATE, False),
        (2101, SOURCE_WEEKENDS, False),  # holidays' China data ends with 2100
    ],
)
def test_each_year_names_its_source(year, source, covered):
    assert CHINA.source_for_year(year) == source
    assert CHINA.is_covered(date(year, 6, 1)) is covered


def test_2027_follows_the_holidays_estimate_and_says_it_is_not_official():
    library = holidays.country_holidays("CN", years=2027, expand=False)
    first = date(2027, 1, 1)
    year = [first + timedelta(days=offset) for offset in range(365)]
    for day in year:
        assert CHINA.is_working_day(day) is library.is_working_day(day), day
    assert not CHINA.is_working_day(date(2027, 10, 1))  # National Day is statutory, a Friday
    assert not CHINA.is_working_day(date(2027, 2, 5))  # Spring Festival eve, a Friday
    # The gap the caller must warn about: not one make-up working day is known for 2027.
    assert not any(CHINA.is_working_day(day) for day in year if day.weekday() >= 5)
    assert not any(CHINA.is_covered(day) for day in year)
    assert CHINA.uncovered_between(date(2026, 12, 20), date(2027, 1, 10)) == [2027]


def test_beyond_every_source_only_weekends_remain():
    first = date(2150, 1, 1)
    for day in (first + timedelta(days=offset) for offset in range(365)):
        assert CHINA.is_working_day(day) is (day.weekday() < 5), day
        assert not CHINA.is_covered(day)
    assert CHINA.add_working_days(date(2150, 1, 2), 1) == date(2150, 1, 5)  # Friday -> Monday


@pytest.mark.parametrize(
    "start, end, uncovered",
    [
        (date(2025, 12, 1), date(2026, 12, 31), []),
        (date(2026, 12, 20), date(2027, 1, 10), [2027]),
        (date(2030, 12, 1), date(2032, 1, 31), [2030, 2031, 2032]),
        (date(2031, 5, 1), date(2031, 5, 1), [2031]),
        (date(2160, 1, 1), date(2150, 1, 1), []),  # an empty range
    ],
)
def test_uncovered_between(start, end, uncovered):
    assert CHINA.uncovered_between(start, end) == uncovered


def test_require_covered_names_the_missing_years():
    CHINA.require_covered(date(2026, 1, 1), date(2026, 12, 31))
    with pytest.raises(CalendarGap, match="2027, 2028") as caught:
        CHINA.require_covered(date(2026, 12, 1), date(2028, 1, 1))
    assert caught.value.years == [2027, 2028]


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)))
@settings(max_examples=300, deadline=None)
def test_never_raises_between_1900_and_2200(day):
    assert isinstance(CHINA.is_working_day(day), bool)
    assert isinstance(CHINA.is_covered(day), bool)


OVERRIDES = WorkingCalendar(
    extra_holidays=[date(2026, 3, 10), date(2026, 10, 8)],
    extra_working_days=[date(2026, 3, 14), date(2026, 10, 3), date(2031, 10, 11)],
)


@pytest.mark.parametrize(
    "start, count, plain, overridden",
    [
        (date(2026, 3, 9), 1, date(2026, 3, 10), date(2026, 3, 11)),  # extra holiday skipped
        (date(2026, 3, 13), 1, date(2026, 3, 16), date(2026, 3, 14)),  # extra working Saturday
        (date(2026, 9, 30), 1, date(2026, 10, 8), date(2026, 10, 3)),  # beats chinese_calendar
        (date(2026, 10, 5), 1, date(2026, 10, 8), date(2026, 10, 9)),
    ],
)
def test_overrides_win_over_every_source(start, count, plain, overridden):
    assert CHINA.add_working_days(start, count) == plain
    assert OVERRIDES.add_working_days(start, count) == overridden


def test_overrides_cover_their_own_dates_only():
    assert OVERRIDES.is_working_day(date(2031, 10, 11))  # a Saturday
    assert OVERRIDES.is_covered(date(2031, 10, 11))
    assert not OVERRIDES.is_covered(date(2031, 10, 12))
    assert OVERRIDES.uncovered_between(date(2031, 10, 1), date(2031, 10, 31)) == [2031]


def test_override_file_changes_the_result(tmp_path):
    path = tmp_path / "calendar.toml"
    path.write_text(
        "# the 2027 notice, typed in\n"
        'holidays = ["2027-10-06", 2027-10-07]\n'
        'working_days = ["2027-09-26"]\n',
        encoding="utf-8",
    )
    calendar = WorkingCalendar.from_override_file(path)
    assert not calendar.is_working_day(date(2027, 10, 6))
    assert not calendar.is_working_day(date(2027, 10, 7))  # a bare TOML date works too
    assert calendar.is_working_day(date(2027, 9, 26))  # a Sunday
    assert CHINA.add_working_days(date(2027, 10, 5), 1) == date(2027, 10, 6)
    assert calendar.add_working_days(date(2027, 10, 5), 1) == date(2027, 10, 8)
    assert calendar.is_covered(date(2027, 9, 26))
    assert not calendar.is_covered(date(2027, 9, 27))


def test_an_empty_override_file_changes_nothing(tmp_path):
    path = tmp_path / "calendar.toml"
    path.write_text("", encoding="utf-8")
    calendar = WorkingCalendar.from_override_file(path)
    assert calendar.add_working_days(date(2026, 9, 30), 7) == date(2026, 10, 15)


@pytest.mark.parametrize(
    "content, named_entry",
    [
        ('holidays = ["2027-13-01"]', "'2027-13-01'"),
        ('holidays = ["1 Oct 2027"]', "'1 Oct 2027'"),
        ('working_days = ["2027-09-26", 20270926]', "working_days[1]"),
        ("holidays = [2027-10-01T09:00:00]", "holidays[0]"),
        ('holidays = "2027-10-01"', "must be a list"),
        ('holiday = ["2027-10-01"]', "unknown key(s) holiday"),
        ('holidays = ["2027-10-01"', "not a valid TOML file"),
        ('holidays = ["2027-10-01"]\nworking_days = ["2027-10-01"]', "2027-10-01 listed both"),
    ],
)
def test_malformed_override_file_names_file_and_entry(tmp_path, content, named_entry):
    path = tmp_path / "calendar.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        WorkingCalendar.from_override_file(path)
    assert str(path) in str(caught.value)
    assert named_entry in str(caught.value)


@pytest.mark.parametrize(
    "day, working",
    [
        (date(2026, 7, 3), False),  # Independence Day observed on the Friday
        (date(2026, 7, 6), True),
        (date(2026, 10, 1), True),  # China's National Day means nothing here
        (date(2026, 10, 10), False),  # nor do China's make-up Saturdays
    ],
)
def test_another_country_uses_holidays_and_weekends(day, working):
    united_states = WorkingCalendar("US")
    assert united_states.is_working_day(day) is working
    assert united_states.source_for_year(2026) == SOURCE_HOLIDAYS


@pytest.mark.parametrize(
    "call",
    [
        lambda: WorkingCalendar("XX"),
        lambda: CHINA.add_working_days(date(2026, 3, 9), 0),
        lambda: WorkingCalendar(extra_holidays=["2026/10/01"]),
    ],
)
def test_misuse_is_a_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_a_datetime_is_refused_rather_than_truncated():
    with pytest.raises(TypeError, match="time zone"):
        CHINA.is_working_day(datetime(2026, 10, 8, 23, 30))


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (date(2026, 9, 30), date(2026, 10, 15), 7),
        (date(2026, 9, 30), date(2026, 10, 7), 0),
        (date(2026, 3, 13), date(2026, 3, 16), 1),
        (date(2026, 3, 16), date(2026, 3, 16), 0),
        (date(2026, 3, 16), date(2026, 3, 9), 0),
    ],
)
def test_working_days_between(start, end, expected):
    assert CHINA.working_days_between(start, end) == expected


@given(
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    count=st.integers(min_value=1, max_value=60),
)
@settings(max_examples=200, deadline=None)
def test_working_days_between_inverts_add_working_days(start, count):
    deadline = CHINA.add_working_days(start, count)
    assert CHINA.working_days_between(start, deadline) == count
    assert CHINA.is_working_day(deadline)
    assert CHINA.working_days_between(start, deadline - timedelta(days=1)) == count - 1
