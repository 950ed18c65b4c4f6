"""Moments and durations named in English and Chinese free text.

This module reads text that `extract.py` has already cleaned: quoted earlier letters cut,
order numbers, phone numbers, versions and error codes blanked. So every digit left here may
be part of a date. Date phrases ("yesterday", "11月20日", "Nov 20, 2026") and clock times
("3pm", "下午3点", "14:20") are found separately, a time is paired with the date right next to
it, and each pair is resolved against `now` in the policy's time zone. Choosing between
several moments is left to `choose_moment`, which prefers asking to guessing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal

import dateparser

FUTURE_TOLERANCE = timedelta(hours=1)  # clocks and "10:15 today" written at 10:00 differ a little
NEAR_FUTURE_DAYS = 14  # a year-less date this close ahead means the coming one, not last year's


@dataclass(frozen=True)
class Moment:
    at: datetime  # timezone-aware, in the policy's time zone
    date_only: bool  # a date without a time: `at` is 00:00 of that day


@dataclass(frozen=True)
class Mention:
    """One moment named in the text, with what it is the moment of."""

    start: int
    end: int
    moment: Moment
    role: str  # "incident" | "purchase" | "other"


@dataclass(frozen=True)
class _DatePhrase:
    start: int
    end: int
    day: date | None
    exact: datetime | None = None  # "3 hours ago", ISO timestamps: already a full moment
    part: str | None = None  # morning/afternoon/evening...: helps read "8点" as 20:00
    weak: bool = False  # "11/20" alone could be a fraction: only counts next to a time


@dataclass(frozen=True)
class _Clock:
    start: int
    end: int
    hour: int
    minute: int
    second: int = 0
    part: str | None = None
    offset: timedelta | None = None  # "UTC", "+08:00" written after the time
    bare: bool = False  # "at 9": a time only beside a part of day ("this morning at 9")


# A date phrase and the clock time beside it; either may be missing, not both.
_Pair = tuple[_DatePhrase | None, _Clock | None]


# ---------------------------------------------------------------- vocabulary

D = "[0-9]"
CN_NUM = "[零〇一二两三四五六七八九十]"
_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_EN_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "a couple of": 2,
    "couple of": 2,
}
_PARTS = {
    "morning": "morning",
    "上午": "morning",
    "早上": "morning",
    "早晨": "morning",
    "清晨": "morning",
    "am": "am",
    "a.m.": "am",
    "凌晨": "small-hours",
    "半夜": "small-hours",
    "深夜": "late",
    "夜里": "late",
    "夜间": "late",
    "noon": "noon",
    "中午": "noon",
    "afternoon": "afternoon",
    "下午": "afternoon",
    "pm": "pm",
    "p.m.": "pm",
    "evening": "evening",
    "night": "evening",
    "晚上": "evening",
    "傍晚": "evening",
    "晚": "evening",
}
_WEEKDAYS_EN = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAYS_ZH = {
    "一": 0,
    "二": 1,
    "三": 2,
    "四": 3,
    "五": 4,
    "六": 5,
    "日": 6,
    "天": 6,
    "7": 6,
    "1": 0,
    "2": 1,
    "3": 2,
    "4": 3,
    "5": 4,
    "6": 5,
}
_MONTHS = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_RELATIVE_DAYS = {  # word -> (days back, part of day)
    "today": (0, None),
    "earlier today": (0, None),
    "this morning": (0, "morning"),
    "this afternoon": (0, "afternoon"),
    "this evening": (0, "evening"),
    "tonight": (0, "evening"),
    "yesterday": (1, None),
    "yday": (1, None),
    "yest": (1, None),
    "last night": (1, "evening"),
    "the day before yesterday": (2, None),
    "day before yesterday": (2, None),
    "tomorrow": (-1, None),
    "今天": (0, None),
    "今日": (0, None),
    "今儿": (0, None),
    "今早": (0, "morning"),
    "今晨": (0, "morning"),
    "今晚": (0, "evening"),
    "昨天": (1, None),
    "昨日": (1, None),
    "昨儿": (1, None),
    "昨晚": (1, "evening"),
    "昨夜": (1, "evening"),
    "前天": (2, None),
    "前晚": (2, "evening"),
    "大前天": (3, None),
    "明天": (-1, None),
    "明晚": (-1, "evening"),
    "后天": (-2, None),
}  # future days are read too, so that "tomorrow 9am" is rejected, not taken as today 9:00


def cn_number(text: str) -> int | None:
    """'12' -> 12, '十二' -> 12, '二十' -> 20, '一百零五' -> 105, '两万' -> 20000."""
    text = text.strip()
    if re.fullmatch(f"{D}+", text):
        return int(text)
    if not text or len(text) > 12:
        return None
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _CN_DIGITS:
            if digit is not None and digit != 0 and ch != "零":
                return None  # "四五十", "三两": a range, not a number
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            section += (1 if digit is None else digit) * _CN_UNITS[ch]
            digit = None
        elif ch == "万":
            total += (section + (digit or 0)) * 10000
            section, digit = 0, None
        else:
            return None
    return total + section + (digit or 0)


def _number(text: str) -> int | None:
    return _EN_NUMBERS.get(text.lower()) or cn_number(text)


# ---------------------------------------------------------------- date phrases

_ISO_TIMESTAMP = re.compile(
    rf"(?<!{D})(20{D}{{2}}-{D}{{2}}-{D}{{2}})T({D}{{2}}:{D}{{2}}(?::{D}{{2}})?)(?:\.{D}+)?"
    rf"(Z|[+-]{D}{{2}}:?{D}{{2}})?"
)
_YMD = re.compile(
    rf"(?<!{D})((?:19|20){D}{{2}})\s*[-/.年]\s*({D}{{1,2}})\s*[-/.月]\s*({D}{{1,2}})"
    rf"(?:\s*[日号])?(?!{D})"
)
_DMY = re.compile(rf"(?<![0-9/.])({D}{{1,2}})([/.])({D}{{1,2}})\2((?:19|20)?{D}{{2}})(?![0-9/]|\.[0-9])")
_MD_ZH = re.compile(rf"(?<!{D})({D}{{1,2}}|{CN_NUM}{{1,3}})\s*月\s*({D}{{1,2}}|{CN_NUM}{{1,3}})\s*[日号]")
_MD_SLASH = re.compile(rf"(?<![0-9/.:-])({D}{{1,2}})[/-]({D}{{1,2}})(?![0-9/%-])")
_MONTH_NAME = re.compile(
    rf"\b(?:(?:{'|'.join(w[:3] + '[a-z]*' for w in _WEEKDAYS_EN)})\.?,?\s+)?"
    # within a line: in a pasted table "¥99\nJune 5" is an amount at one row's end, no "99 June"
    rf"(?:{D}{{1,2}}(?:st|nd|rd|th)?[ \t]{{1,3}}(?:of[ \t]{{1,3}})?(?:{_MONTHS})\b\.?"
    rf"|(?:{_MONTHS})\b\.?[ \t]{{1,3}}{D}{{1,2}}(?:st|nd|rd|th)?\b)(?:,?[ \t]{{1,3}}((?:19|20){D}{{2}})\b)?",
    re.IGNORECASE,
)
_ORDINAL_DAY = re.compile(  # "the 3rd time" is no date: only after a date preposition
    rf"\b(?:on|since|from|dated|until|till|before|after|by)\s+the\s+({D}{{1,2}})(?:st|nd|rd|th)\b(?!\s{{1,3}}of\s)",
    re.IGNORECASE,
)
_DAY_ZH = re.compile(rf"(?<![0-9月])({D}{{1,2}})\s*号(?!码)")
_DAY_OF_MONTH_ZH = re.compile(rf"(本月|这个月|上个?月)\s*({D}{{1,2}})\s*[日号]")
_RELATIVE = re.compile(
    r"\b(?:the\s+)?day before yesterday\b|\byesterday(?:\s+(?:morning|afternoon|evening|night))?\b|\by(?:est|day)\b"
    r"|\bthis\s+(?:morning|afternoon|evening)\b|\btonight\b|\blast night\b|\b(?:earlier\s+)?today\b"
    r"|\btomorrow\b|大前天|前天|前晚|昨天|昨日|昨儿|昨晚|昨夜|今天|今日|今儿|今早|今晨|今晚|明天|明晚|(?<!以)后天",
    re.IGNORECASE,
)
_WEEKDAY_EN = re.compile(
    rf"\b(?:(last|this|past|next)\s+)?({'|'.join(_WEEKDAYS_EN)})(?:\s+(morning|afternoon|evening|night))?\b",
    re.IGNORECASE,
)
# The prefix is optional, so the pattern may start only at a prefix, at 个 or at the week word:
# a leading "\s*" would let it start anywhere in a run of spaces (cubic on a blank mail).
_WEEKDAY_ZH = re.compile(
    r"(?:(上上|上|这|本|下下|下)\s{0,3}个?\s{0,3}|个\s{0,3})?(?:周|星期|礼拜)\s{0,3}([一二三四五六日天1-7])(?![0-9])"
)
_AGO = re.compile(
    rf"(?:\b({D}{{1,3}}|an?|one|two|three|four|five|six|seven|eight|nine|ten|(?:a )?couple of)\s+"
    r"(minute|min|hour|hr|day|week)s?\s+ago\b"
    rf"|({D}{{1,3}}|{CN_NUM}{{1,3}}|半)\s*个?\s*(分钟|小时|钟头|天|日|星期|周|礼拜)\s*(?:之|以)?前)",
    re.IGNORECASE,
)
_JUST_NOW = re.compile(r"\bjust now\b|刚刚|刚才", re.IGNORECASE)

_CLOCK_EN = re.compile(
    rf"(?<![0-9:.])({D}{{1,2}})(?::({D}{{2}})(?::({D}{{2}}))?)?(?(2)|(?=\s*[ap]\.?m\b))"
    r"\s*(am|pm|a\.m\.|p\.m\.)?(?![a-z])"
    rf"(?:\s*(?:(?P<utc>UTC|GMT|Z\b)\s*(?P<utc_off>[+-]\s*{D}{{1,2}}(?::?{D}{{2}})?)?"
    rf"|(?P<off>\+{D}{{2}}:?{D}{{2}})|\(?(?P<beijing>北京时间|Beijing time|China time|CST)\)?))?",
    re.IGNORECASE,
)
_CLOCK_ZH = re.compile(  # "昨晚" is a date phrase: its "晚" must not start a clock time
    r"(?:(?P<part>凌晨|早上|早晨|清晨|上午|中午|下午|傍晚|晚上|夜里|夜间|半夜|深夜|(?<![昨今前傍])晚)\s{0,3})?"
    rf"(?P<hour>{D}{{1,2}}|{CN_NUM}{{1,3}})\s{{0,3}}[点點时]"
    rf"(?:\s{{0,3}}(?P<minute>{D}{{1,2}}|{CN_NUM}{{1,3}})\s{{0,3}}分|(?P<minute2>{D}{{2}})(?![0-9]|\s{{0,3}}[元块%])"
    r"|\s{0,3}(?P<half>半)|\s{0,3}(?P<quarter>一刻|三刻))?"
)
_CLOCK_WORD = re.compile(r"\b(noon|midnight)\b", re.IGNORECASE)
_CLOCK_EN_PHRASE = re.compile(
    rf"(?<![0-9:.])({D}{{1,2}})(?:[:.]({D}{{2}}))?\s{{1,3}}(?:o'?clock\s{{1,3}})?"
    r"(?:in the (morning|afternoon|evening)|at (night))\b",
    re.IGNORECASE,
)
# "afternoon 3 o'clock" (a Chinese word order in English), "morning 9:15"
_CLOCK_PART_FIRST = re.compile(
    rf"\b(morning|afternoon|evening|night)\s{{1,3}}({D}{{1,2}})(?:[:.]({D}{{2}}))?"
    r"\s{0,3}o'?clock\b",
    re.IGNORECASE,
)
# "this morning at 9", "yesterday evening around 9": kept only beside a phrase with a part of day
_CLOCK_BARE = re.compile(
    rf"\b(?:at|around|about)\s{{1,3}}({D}{{1,2}})(?![0-9:a-z]|[.,][0-9]|\s{{0,2}}(?:[ap]\.?m\b|%|"
    r"percent|hours?|hrs?|minutes?|mins?|days?|times?|calls?|requests?|gb|tokens?|"
    r"dollars?|bucks|euros?|usd|eur|rmb|cny|元|块|美元)\b)",
    re.IGNORECASE,
)

# "北京时间 10月8日下午3点", "Beijing time: Oct 8, 3pm": the zone named before the date holds for its clock
_BEIJING_BEFORE = re.compile(r"(?:北京时间|Beijing time|China time)\s{0,2}[:：]?\s{0,2}$", re.IGNORECASE)

# Words allowed between a date and its time: "yesterday at around 3pm", "11月20日晚上8点".
_PAIR_GAP = re.compile(
    r"[\s,，(（]*(?:(?:at|on|around|about|approx\.?|approximately|roughly|~|from|since|"
    r"in the|的|左右|大概|大约|约|于|在|具体时间|时间|为|"
    # "Dec 28 night 11pm": a part of the day between the date and its clock
    r"(?:in the |at )?(?:morning|afternoon|evening|night))[\s,，]*)*",
    re.IGNORECASE,
)
_RANGE_GAP = re.compile(r"\s*(?:-|–|—|~|to|until|till|through|and|到|至|－)\s*", re.IGNORECASE)
_RANGE_OPENER = re.compile(r"(?:between|from|从)\s*$", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"[。！？；!?;\n]|\.(?=\s|$)")
_CLAUSE_BREAK = re.compile(r"[,，]|\b(?:and|but)\b|但是?|并且|然后", re.IGNORECASE)
_PURCHASE_BEFORE = re.compile(
    r"\b(?:bought|buy|purchased?|purchasing|subscribed|ordered|signed up)\b"
    r"|购买|买的|买了|订阅|开通|下单|注册",
    re.IGNORECASE,
)
# "downgraded to the free plan on 2026-11-01": a change of plan, not the charge
_OTHER_VERB = re.compile(
    r"\b(?:registered|downgraded|upgraded|switched|signed up|cancell?ed|turned off|disabled)\b"
    r"|注册|取消|降级|关闭|关掉"
    r"|\binvoice\b[^,.;\n]{0,30}\bdated\b",
    re.IGNORECASE,
)
# "十一月三十号已经扣过一次年费了，今天又扣": the earlier charge, not the one complained of
_EARLIER_CHARGE_AFTER = re.compile(r"^\s{0,3}(?:已经|已)(?:扣|付|交|续)[^，,。！!\n]{0,6}过")
_CHARGE_AFTER = re.compile(r"^\s{0,3}(?:被|又)?(?:重复|多)?(?:扣款|扣费|扣了|扣除|扣)")
_PURCHASE_AFTER = re.compile(r"^\s*(?:购买|买的|买了|订阅|开通|下单|注册)")
_OTHER_BEFORE = re.compile(
    r"\b(?:applied|submitted|wrote|replied|emailed|sent|forwarding|registered|"
    r"(?:mail|message|letter|request) from|ticket|deadline|due|invoice|"
    r"downgraded|upgraded|switched|"
    r"by|before|until|expires?|renewal|cancell?ed|refund request|application)\b|"
    r"截止|之前回复|取消|开票日期|发票日期|开票|账单日"
    # "The charge was Nov 14, not Nov 12": the date corrected away
    r"|\bnot\s{1,3}(?:on\s{1,3})?(?:the\s{1,3})?$|不是\s{0,2}$",
    re.IGNORECASE,
)
_OTHER_AFTER = re.compile(r"^\s*(?:的)?\s*(?:已经|已)?\s*(?:退款)?(?:申请|提交|发的|回复|到期|截止|前回复|工单|取消)")


# "I want the 86.40 refunded TODAY": when the customer wants it, not when it happened
_TODAY = re.compile(r"today|now|今天|今日", re.IGNORECASE)
_DEMAND_BEFORE = re.compile(r"\b(?:refund(?:ed)?|back|want|need|return(?:ed)?)\b|退|还给|要", re.IGNORECASE)
# "今天必须给我个说法", "今天上班第一天": the day of writing, and what is demanded on it
_DEMAND_AFTER = re.compile(r"^\s{0,3}(?:就?必须|一定要?|务必|马上|立刻|立即|之内|给我|上班|我?就来|能不能|可以吗)")


_FUTURE_CUE = re.compile(r"\b(?:in|next|tomorrow|later|coming)\b|明天|后天|下周|下个|下星期|以后|之后", re.IGNORECASE)


def _tz_localize(naive: datetime, tz: tzinfo) -> datetime:
    localize = getattr(tz, "localize", None)  # pytz zones need localize(), not replace()
    return localize(naive) if localize else naive.replace(tzinfo=tz)


def _recent_month_day(month: int, day: int, today: date) -> date | None:
    """A year-less date is its most recent past occurrence ("Dec 28" said on Jan 5 is last year).

    Except a date only days ahead ("travelling from Nov 25" on Nov 22): the writer means the
    coming one, which is in the future and so never an incident, rather than a year ago."""
    try:
        this_year = date(today.year, month, day)
        if today < this_year <= today + timedelta(days=NEAR_FUTURE_DAYS):
            return this_year
    except ValueError:
        pass
    for year in range(today.year, today.year - 9, -1):  # Feb 29 looks back up to 8 years
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate <= today:
            return candidate
    return None


def _recent_day_of_month(day: int, today: date) -> date | None:
    year, month = today.year, today.month
    for _ in range(3):
        try:
            candidate = date(year, month, day)
            if candidate <= today:
                return candidate
        except ValueError:
            pass
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return None


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


# Each reader turns one match into a phrase, or None when the date does not exist.


def _read_iso_timestamp(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    stamp = m.group(1) + "T" + m.group(2) + (m.group(3) or "")
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    at = parsed.astimezone(tz) if parsed.tzinfo else _tz_localize(parsed, tz)
    return _DatePhrase(m.start(), m.end(), at.date(), exact=at)


def _read_ymd(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    return _phrase(m, _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3))))


def _read_dmy(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    a, b, year = int(m.group(1)), int(m.group(3)), int(m.group(4))
    year += 2000 if year < 100 else 0
    # "21/11/2026" is day-first, "11/21/2026" month-first; an ambiguous slash reads month-first
    # (US and Chinese habit), an ambiguous dot day-first (European habit).
    day_first = a > 12 or (m.group(2) == "." and b <= 12)
    return _phrase(m, _safe_date(year, b, a) if day_first else _safe_date(year, a, b))


def _read_month_day_zh(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    month, day = cn_number(m.group(1)), cn_number(m.group(2))
    return _phrase(m, _recent_month_day(month, day, now.date()) if month and day else None)


def _read_month_day_numeric(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    a, b = int(m.group(1)), int(m.group(2))
    month, day = (b, a) if a > 12 else (a, b)
    valid = 1 <= month <= 12
    return _phrase(m, _recent_month_day(month, day, now.date()) if valid else None, weak=True)


def _read_month_name(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    settings = {
        "RELATIVE_BASE": now.replace(tzinfo=None),
        "PREFER_DATES_FROM": "past",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    try:
        parsed = dateparser.parse(m.group(0), languages=["en", "zh"], settings=settings)
    except Exception:  # dateparser raises assorted errors on odd input; a miss is a miss
        return None
    day = parsed.date() if parsed else None
    if day and not m.group(1):  # year-less: our rule, not dateparser's, picks the year
        day = _recent_month_day(day.month, day.day, now.date())
    return _phrase(m, day)


def _read_day_of_month(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    return _phrase(m, _recent_day_of_month(int(m.group(1)), now.date()))


def _read_day_of_named_month_zh(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    month_start = now.date().replace(day=1)
    if m.group(1).startswith("上"):
        month_start = (month_start - timedelta(days=1)).replace(day=1)
    return _phrase(m, _safe_date(month_start.year, month_start.month, int(m.group(2))))


def _read_relative_day(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    word = re.sub(r"\s+", " ", m.group(0).lower())
    back, part = _RELATIVE_DAYS.get(word, (None, None))
    if back is None and word.startswith("yesterday "):
        back, part = 1, _PARTS.get(word.split()[1], "evening")
    return None if back is None else _phrase(m, now.date() - timedelta(days=back), part=part)


def _read_weekday_en(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    today, weekday = now.date(), _WEEKDAYS_EN.index(m.group(2).lower())
    modifier = (m.group(1) or "").lower()
    back = (today.weekday() - weekday) % 7
    if modifier in ("last", "past") and back == 0:
        back = 7
    if modifier == "next":  # in the future: found only so that it is rejected
        back = -((weekday - today.weekday()) % 7 or 7)
    return _phrase(m, today - timedelta(days=back), part=_PARTS.get((m.group(3) or "").lower()))


def _read_weekday_zh(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    """周五 is the most recent Friday; 上周五 the Friday of last (Monday-based) week."""
    today, weekday = now.date(), _WEEKDAYS_ZH[m.group(2)]
    weeks_back = {"上上": 2, "上": 1, "这": 0, "本": 0, "下": -1, "下下": -2}.get(m.group(1) or "")
    if weeks_back is None:
        return _phrase(m, today - timedelta(days=(today.weekday() - weekday) % 7))
    monday = today - timedelta(days=today.weekday())
    return _phrase(m, monday - timedelta(weeks=weeks_back) + timedelta(days=weekday))


def _read_ago(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    amount_text, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    amount = Decimal("0.5") if amount_text == "半" else _number(amount_text)
    if not amount:
        return None
    unit = unit.lower()
    if unit in ("minute", "min", "分钟", "hour", "hr", "小时", "钟头"):
        minutes = float(amount) * (1 if unit in ("minute", "min", "分钟") else 60)
        at = (now - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
        return _DatePhrase(m.start(), m.end(), at.date(), exact=at)
    if amount != int(amount):
        return None
    days = int(amount) * (7 if unit in ("week", "星期", "周", "礼拜") else 1)
    return _phrase(m, now.date() - timedelta(days=days))


def _read_just_now(m: re.Match, now: datetime, tz: tzinfo) -> _DatePhrase | None:
    at = now.replace(second=0, microsecond=0)
    return _DatePhrase(m.start(), m.end(), at.date(), exact=at)


def _phrase(m: re.Match, day: date | None, **details) -> _DatePhrase | None:
    return None if day is None else _DatePhrase(m.start(), m.end(), day, **details)


_DATE_READERS = (
    (_ISO_TIMESTAMP, _read_iso_timestamp),
    (_YMD, _read_ymd),
    (_DMY, _read_dmy),
    (_MD_ZH, _read_month_day_zh),
    (_MD_SLASH, _read_month_day_numeric),
    (_MONTH_NAME, _read_month_name),
    (_ORDINAL_DAY, _read_day_of_month),
    (_DAY_ZH, _read_day_of_month),
    (_DAY_OF_MONTH_ZH, _read_day_of_named_month_zh),
    (_RELATIVE, _read_relative_day),
    (_WEEKDAY_EN, _read_weekday_en),
    (_WEEKDAY_ZH, _read_weekday_zh),
    (_AGO, _read_ago),
    (_JUST_NOW, _read_just_now),
)


def _date_phrases(text: str, now: datetime, tz: tzinfo) -> list[_DatePhrase]:
    # _WEEKDAY_ZH may start anywhere and runs \s* over the blanked (masked) stretches of the
    # text, quadratically: half the time of reading a mail. Without its word it cannot match.
    weekday_zh = any(word in text for word in ("周", "星期", "礼拜"))
    found = [
        phrase
        for pattern, read in _DATE_READERS
        if weekday_zh or pattern is not _WEEKDAY_ZH
        for m in pattern.finditer(text)
        if (phrase := read(m, now, tz)) is not None
    ]
    return _without_overlaps(found)


def _without_overlaps(items: list) -> list:
    """Keep the longest of overlapping matches ("2026-11-20" beats "11-20")."""
    kept: list = []
    for item in sorted(items, key=lambda x: (x.start, -(x.end - x.start))):
        if kept and item.start < kept[-1].end:
            continue
        kept.append(item)
    return kept


# ---------------------------------------------------------------- clock times


def _to_24h(hour: int, part: str | None) -> int | None:
    if part in ("pm", "afternoon", "evening") and hour < 12:
        hour += 12
    elif part == "late" and 6 <= hour < 12:
        hour += 12
    elif part == "noon" and hour < 6:
        hour += 12
    elif part in ("am", "small-hours", "late") and hour == 12:
        hour = 0
    return hour if 0 <= hour <= 23 else None


def _clocks(text: str) -> list[_Clock]:
    found: list[_Clock] = []
    for m in _CLOCK_EN.finditer(text):
        if not m.group(2) and not m.group(4):
            continue  # a bare number is no time
        part = _PARTS.get((m.group(4) or "").lower())
        hour, minute = _to_24h(int(m.group(1)), part), int(m.group(2) or 0)
        if hour is None or minute > 59 or (part in ("am", "pm") and int(m.group(1)) > 12):
            continue
        found.append(_Clock(m.start(), m.end(), hour, minute, int(m.group(3) or 0), part, _utc_offset(m)))
    for m in _CLOCK_ZH.finditer(text):
        part = _PARTS.get(m.group("part") or "")
        raw_hour = cn_number(m.group("hour"))
        # "一点" also means "a little": a Chinese-numeral hour needs a part of day before it,
        # except "零点" (midnight) when no digit follows ("零点五" is 0.5).
        midnight = m.group("hour") in ("零", "〇") and not re.match(rf"{D}|{CN_NUM}", text[m.end() : m.end() + 1])
        if raw_hour is None or (not part and not m.group("hour").isdigit() and not midnight):
            continue
        zh_minute = _zh_minute(m)
        hour = _to_24h(raw_hour, part)
        if hour is not None and zh_minute is not None and zh_minute <= 59:
            found.append(_Clock(m.start(), m.end(), hour, zh_minute, 0, part))
    for m in _CLOCK_EN_PHRASE.finditer(text):
        part = _PARTS.get((m.group(3) or m.group(4)).lower())
        hour, minute = _to_24h(int(m.group(1)), part), int(m.group(2) or 0)
        if hour is not None and minute <= 59 and int(m.group(1)) <= 12:
            found.append(_Clock(m.start(), m.end(), hour, minute, 0, part))
    for m in _CLOCK_WORD.finditer(text):
        found.append(_Clock(m.start(), m.end(), 12 if m.group(1).lower() == "noon" else 0, 0))
    for m in _CLOCK_PART_FIRST.finditer(text):
        part = _PARTS.get(m.group(1).lower())
        hour, minute = _to_24h(int(m.group(2)), part), int(m.group(3) or 0)
        if hour is not None and minute <= 59 and int(m.group(2)) <= 12:
            found.append(_Clock(m.start(), m.end(), hour, minute, 0, part))
    for m in _CLOCK_BARE.finditer(text):
        if int(m.group(1)) <= 12:
            found.append(_Clock(m.start(1), m.end(1), int(m.group(1)), 0, bare=True))
    return _without_overlaps(found)


def _zh_minute(m: re.Match) -> int | None:
    if m.group("half"):
        return 30
    if m.group("quarter"):
        return 15 if m.group("quarter") == "一刻" else 45
    return cn_number(m.group("minute") or m.group("minute2") or "0")


def _utc_offset(m: re.Match) -> timedelta | None:
    if m.group("beijing"):
        return timedelta(hours=8)
    raw = m.group("off") or ((m.group("utc_off") or "+00:00") if m.group("utc") else None)
    if raw is None:
        return None
    raw = raw.replace(" ", "")
    sign = -1 if raw.startswith("-") else 1
    digits = raw.lstrip("+-").replace(":", "")
    hours, minutes = (int(digits[:-2] or 0), int(digits[-2:])) if len(digits) > 2 else (int(digits), 0)
    offset = sign * timedelta(hours=hours, minutes=minutes)
    return offset if abs(offset) <= timedelta(hours=14) else None  # no zone is further off


# ---------------------------------------------------------------- mentions


def find_time_spans(text: str) -> list[tuple[int, int]]:
    """Where dates, clock times and durations sit, so the money reader can skip them.

    Needs no `now`: it only locates, it does not resolve."""
    patterns = [pattern for pattern, _ in _DATE_READERS]
    patterns += [_CLOCK_EN, _CLOCK_ZH, _CLOCK_EN_PHRASE, _CLOCK_PART_FIRST, _CLOCK_WORD, _DURATION]
    return [
        m.span()
        for pattern in patterns
        for m in pattern.finditer(text)
        if pattern is not _CLOCK_EN or m.group(2) or m.group(4)
    ]


def local_now(now: datetime, tz: tzinfo) -> datetime:
    return now.astimezone(tz) if now.tzinfo else _tz_localize(now, tz)


def find_moments(
    text: str, now: datetime, tz: tzinfo, *, answer: bool = False, include_future: bool = False
) -> list[Mention]:
    """Every moment the text names, resolved, with its role; ranges keep only their start.

    Moments more than an hour after `now` are left out unless `include_future`."""
    return list(_find_moments(text, now, tz, answer, include_future))


@functools.lru_cache(maxsize=64)  # the incident and the purchase readers scan the same text
def _find_moments(text: str, now: datetime, tz: tzinfo, answer: bool, include_future: bool) -> tuple[Mention, ...]:
    now = local_now(now, tz)
    phrases = _date_phrases(text, now, tz)
    clocks = [c for c in _clocks(text) if not any(p.start <= c.start < p.end for p in phrases)]
    pairs = _pair(text, phrases, clocks)
    pairs = [p for p in pairs if not (p[0] and p[0].weak and not p[1] and not answer and not _weak_ok(text, p[0]))]
    pairs = [(d, c) if not (c and c.bare) or (d and d.part) else (d, None) for d, c in pairs if d or not (c and c.bare)]
    mentions = []
    for phrase, clock in _drop_range_ends(text, pairs):
        if (
            phrase
            and clock
            and clock.offset is None
            and _BEIJING_BEFORE.search(text[max(0, phrase.start - 8) : phrase.start])
        ):
            clock = replace(clock, offset=timedelta(hours=8))  # "北京时间2026年10月8日下午3点"
        moment = _resolve(phrase, clock, now, tz)
        if moment is not None:
            start = min(x.start for x in (phrase, clock) if x)
            end = max(x.end for x in (phrase, clock) if x)
            mentions.append(Mention(start, end, moment, _role(text, start, end)))
    return tuple(m for m in mentions if include_future or m.moment.at <= now + FUTURE_TOLERANCE)


def _weak_ok(text: str, phrase: _DatePhrase) -> bool:
    return bool(
        re.search(
            r"(?:\b(?:on|since|from|dated|date|time)|于|在|时间|日期)[\s:：]*$",
            text[max(0, phrase.start - 8) : phrase.start],
            re.IGNORECASE,
        )
    )


def _pair(text: str, phrases: list[_DatePhrase], clocks: list[_Clock]) -> list[_Pair]:
    """Attach each clock time to the date phrase touching it, if one does."""
    items: list[_DatePhrase | _Clock] = sorted([*phrases, *clocks], key=lambda x: x.start)
    pairs: list[_Pair] = []
    used: set[int] = set()
    for i, item in enumerate(items):
        if id(item) in used:
            continue
        after = items[i + 1] if i + 1 < len(items) else None
        if (
            isinstance(item, _DatePhrase)
            and isinstance(after, _Clock)
            and item.exact is None
            and _touching(text, item, after)
        ):
            pairs.append((item, after))
            used.add(id(after))
        elif (
            isinstance(item, _Clock)
            and isinstance(after, _DatePhrase)
            and after.exact is None
            and _touching(text, item, after)
        ):
            pairs.append((after, item))
            used.add(id(after))
        elif isinstance(item, _DatePhrase):
            pairs.append((item, None))
        else:
            pairs.append((None, item))
    return pairs


def _touching(text: str, first, second) -> bool:
    gap = text[first.end : second.start]
    return len(gap) <= 16 and _PAIR_GAP.fullmatch(gap) is not None


def _drop_range_ends(text: str, pairs: list[_Pair]) -> list[_Pair]:
    """'between 14:00 and 16:00 yesterday', 'from Nov 18 to Nov 20': the incident is the start."""
    kept: list[_Pair] = []
    for pair in pairs:
        if kept:
            prev = kept[-1]
            prev_end = max(x.end for x in prev if x)
            prev_start = min(x.start for x in prev if x)
            start = min(x.start for x in pair if x)
            gap = text[prev_end:start]
            if _RANGE_GAP.fullmatch(gap) and (
                not re.search(r"\band\b", gap, re.IGNORECASE) or _RANGE_OPENER.search(text[:prev_start])
            ):
                if prev[0] is None and pair[0] is not None:  # the start borrows the end's date
                    kept[-1] = (pair[0], prev[1])
                continue
        kept.append(pair)
    return kept


def _resolve(phrase: _DatePhrase | None, clock: _Clock | None, now: datetime, tz: tzinfo) -> Moment | None:
    if phrase is not None and phrase.exact is not None:
        return Moment(phrase.exact, False)
    day = phrase.day if phrase else now.date()
    if clock is None:
        if day is None:
            return None
        return Moment(_tz_localize(datetime.combine(day, time()), tz), True)
    hour: int | None = clock.hour
    if clock.part is None and phrase is not None and phrase.part:
        hour = _to_24h(clock.hour, phrase.part)
    if day is None or hour is None:
        return None
    if phrase is not None and phrase.part == "evening" and hour < 5:
        day += timedelta(days=1)  # "3am last night", "昨晚凌晨2点": after midnight, the next day
    naive = datetime.combine(day, time(hour, clock.minute, min(clock.second, 59)))
    if clock.offset is not None:
        at = naive.replace(tzinfo=timezone(clock.offset)).astimezone(tz)
    else:
        at = _tz_localize(naive, tz)
    return Moment(at, False)


def _role(text: str, start: int, end: int) -> str:
    before = _SENTENCE_BREAK.split(text[max(0, start - 40) : start])[-1]
    before = _CLAUSE_BREAK.split(before)[-1]  # "bought on Nov 1, and since the 15th ..."
    after = text[end : end + 8]
    if _TODAY.fullmatch(text[start:end]) and (_DEMAND_BEFORE.search(before) or _DEMAND_AFTER.search(after)):
        return "other"
    if _EARLIER_CHARGE_AFTER.search(text[end : end + 16]):
        return "other"
    if _CHARGE_AFTER.search(after):  # "购买的套餐于三天前扣款": the date of the charge itself
        return "incident"
    if _PURCHASE_BEFORE.search(before) or _PURCHASE_AFTER.search(after):
        return "purchase"
    if _OTHER_BEFORE.search(before[-14:]) or _OTHER_AFTER.search(after) or _OTHER_VERB.search(before):
        return "other"
    return "incident"


def choose_moment(mentions: list[Mention], role: str = "incident") -> Moment | None:
    """The one moment of this role; None when there is none or two that disagree."""
    moments = {m.moment for m in mentions if m.role == role}
    timed = {m for m in moments if not m.date_only}
    # A date-only mention agrees with a timed one on the same day ("yesterday ... at 3pm yesterday").
    moments = timed | {m for m in moments if m.date_only and not any(t.at.date() == m.at.date() for t in timed)}
    return next(iter(moments)) if len(moments) == 1 else None


def parse_answer_moment(text: str, now: datetime, tz: tzinfo) -> Moment | None:
    """The whole text answers "when?": patterns first, then dateparser on the short text."""
    now = local_now(now, tz)
    mentions = find_moments(text, now, tz, answer=True, include_future=True)
    if mentions or len(text) > 60 or _FUTURE_CUE.search(text):
        # Our patterns saw a date: if it lies ahead, the answer is no incident time at all.
        return choose_moment(
            [
                replace(m, role="incident")
                for m in mentions
                if m.role != "other" and m.moment.at <= now + FUTURE_TOLERANCE
            ]
        )
    settings = {
        "RELATIVE_BASE": now.replace(tzinfo=None),
        "PREFER_DATES_FROM": "past",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    try:
        parsed = dateparser.parse(text, languages=["zh", "en"], settings=settings)
    except Exception:
        return None
    if parsed is None:
        return None
    has_time = re.search(r"[0-9]:[0-9]|[0-9]\s*[ap]\.?m|点|noon|midnight", text, re.IGNORECASE)
    at = _tz_localize(parsed if has_time else datetime.combine(parsed.date(), time()), tz)
    return Moment(at, not has_time) if at <= now + FUTURE_TOLERANCE else None


# ---------------------------------------------------------------- durations

_DURATION = re.compile(
    rf"(?<![A-Za-z0-9.月第])(?:({D}+(?:\.{D}+)?|{CN_NUM}{{1,3}}"
    r"|an?|one|two|three|four|five|six|seven|eight|nine|ten"
    r"|twelve|half an?|a couple of|整整|一整)\s*(?:个)?\s*(半)?\s*"
    r"(hours?|hrs?|h\b|小时|钟头|days?|天|日(?![期元])|weeks?|星期|minutes?|mins?|分钟)(半)?"
    r"(?:\s+and\s+a\s+half)?|半天|一整天|整天|半小时|半个小时)",
    re.IGNORECASE,
)
_UNIT_HOURS: dict[str, int | Decimal] = {
    "hour": 1,
    "hr": 1,
    "h": 1,
    "小时": 1,
    "钟头": 1,
    "day": 24,
    "天": 24,
    "日": 24,
    "week": 168,
    "星期": 168,
    "minute": Decimal(1) / 60,
    "min": Decimal(1) / 60,
    "分钟": Decimal(1) / 60,
}
_OUTAGE = re.compile(
    r"\b(?:down|outage|offline|unavailable|unreachable|not working|didn'?t work|doesn'?t work|"
    r"failing|failed|fails|broken|no response|timed? ?out|errors?|couldn'?t (?:use|access|connect)|"
    r"can'?t (?:use|access|connect)|cannot (?:use|access|connect)|interrupt\w*|disruption|"
    r"lasted)\b|宕机|挂了|挂掉|用不了|不能用|无法使用|无法访问|不可用|中断|故障|停服|崩溃|崩了|"
    r"连不上|超时|报错|瘫痪|没法用",
    re.IGNORECASE,
)
_NOT_OUTAGE_AFTER = re.compile(r"^\s*(?:ago|later|before|之前|以前|前|后|以后|之后|内|以内)", re.IGNORECASE)
_NOT_OUTAGE_BEFORE = re.compile(r"(?:\b(?:within|in|every|each|per|after|first|last)|每|前|后)\s*$", re.IGNORECASE)


def _duration_hours(m: re.Match) -> Decimal | None:
    whole = m.group(0).strip()
    fixed: dict[str, int | Decimal] = {
        "半天": 12,
        "一整天": 24,
        "整天": 24,
        "半小时": Decimal("0.5"),
        "半个小时": Decimal("0.5"),
    }
    if whole in fixed:
        return Decimal(fixed[whole])
    amount_text, unit = m.group(1).lower(), m.group(3).lower()
    if amount_text.startswith("half"):
        amount = Decimal("0.5")
    elif amount_text in ("整整", "一整"):
        amount = Decimal(1)
    elif re.fullmatch(r"[0-9.]+", amount_text):
        amount = Decimal(amount_text)
    else:
        number = _number(amount_text)
        if number is None:
            return None
        amount = Decimal(number)
    if m.group(2) or m.group(4) or "half" in whole.lower():
        amount += Decimal("0.5")
    unit = unit.rstrip("s") if unit.isascii() and unit not in ("h", "hrs") else unit
    per_unit = _UNIT_HOURS.get("hr" if unit == "hrs" else unit)
    # normalize() drops "48.0"'s zero; + 0 turns its "1.2E+2" back into "120" for str().
    return None if per_unit is None else (amount * Decimal(per_unit)).normalize() + 0


def find_outage_hours(text: str, *, answer: bool = False) -> list[Decimal]:
    """Durations said of an outage ("down for 2 days" -> 48); every one, for the caller to judge."""
    found = []
    for m in _DURATION.finditer(text):
        if _NOT_OUTAGE_AFTER.search(text[m.end() : m.end() + 6]):
            continue
        if _NOT_OUTAGE_BEFORE.search(text[max(0, m.start() - 8) : m.start()]):
            continue
        sentence = _sentence_around(text, m.start(), m.end())
        if not answer and not _OUTAGE.search(sentence):
            continue
        hours = _duration_hours(m)
        if hours is not None and hours > 0:
            found.append(hours)
    return found


def _sentence_around(text: str, start: int, end: int) -> str:
    head = _SENTENCE_BREAK.split(text[:start])[-1]
    tail = _SENTENCE_BREAK.split(text[end:])[0]
    return head + text[start:end] + tail
