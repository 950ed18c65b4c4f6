"""What well-kept libraries read from customers' first mails, against refunddesk's own reader.

    .venv/bin/python bench/reading_libraries.py [set.json ...]   (default tests/data/reading_eval.json)

Every reader gets the same text: the entry built into a real mail and parsed by intake's own
parser (tests/reading_eval.py), with the mail's `now` and the desk's time zone, and is scored
by the same rules as tests/test_extract_accuracy.py. A library reads only some fields; the
others show "-". Each adapter below turns the library's output into refunddesk's fields with
as little of our own judgement as possible, and says which candidate it takes:

- every date reader: a candidate counts only if it lies in the year before `now` (a refund is
  asked within a year; this drops dateparser's "by $37" = 1937 and ctparse's next-year dates);
- "+prep": the library reads the text after refunddesk's own preparation (quotes cut,
  distractors such as order numbers, phones and token counts blanked: policy/extract.py), to
  tell the library's parsing from our cleaning.

dateparser, price-parser are dependencies; ctparse, jionlp, cn2an come with
`pip install -e '.[bench]'`. A library that is missing is named in the table, not a crash.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from contextlib import redirect_stdout
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import reading_eval as ev  # noqa: E402

from refunddesk.policy.extract import read_fields  # noqa: E402

DATE = ("incident_at",)
MONEY = ("amount", "currency")
# The currency signs and words price-parser and jionlp hand back, as ISO codes (docs/reading.md).
ISO = {"$": "USD", "us$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD", "美元": "USD",
       "美金": "USD", "¥": "CNY", "￥": "CNY", "rmb": "CNY", "cny": "CNY", "元": "CNY", "人民币": "CNY",
       "块": "CNY", "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "欧元": "EUR"}


def _plausible(at: datetime | None, now: datetime) -> bool:
    return at is not None and now - timedelta(days=366) <= at <= now + timedelta(minutes=1)


def _moment(at: datetime, date_only: bool, tz) -> dict:
    at = at.replace(tzinfo=tz) if at.tzinfo is None else at.astimezone(tz)
    fields = {"incident_at": at.isoformat()}
    if date_only:
        fields["incident_date_only"] = "1"
    return fields


# ---------------------------------------------------------------- the adapters

def dateparser_reader():
    from dateparser import DateDataParser
    from dateparser.search import search_dates

    def read(text, now, tz):
        """search_dates, en+zh, relative to `now` in the desk's zone, past preferred; the longest
        matched phrase wins (the most specific; the first hit is often "now" or "May"). Whether
        it holds a time of day is dateparser's own answer: the phrase parsed again with
        RETURN_TIME_AS_PERIOD has the period "time"."""
        settings = {"RELATIVE_BASE": now.astimezone(tz).replace(tzinfo=None), "PREFER_DATES_FROM": "past",
                    "TIMEZONE": tz.key, "RETURN_AS_TIMEZONE_AWARE": True}
        found = [(phrase, at) for phrase, at in search_dates(text, languages=["en", "zh"], settings=settings) or ()
                 if _plausible(at, now)]
        if not found:
            return {}
        phrase, at = max(found, key=lambda hit: len(hit[0]))
        data = DateDataParser(languages=["en", "zh"], settings=settings | {"RETURN_TIME_AS_PERIOD": True})
        return _moment(at, data.get_date_data(phrase).period != "time", tz)
    return read


def ctparse_reader():
    import logging

    from ctparse import ctparse
    from ctparse.types import Interval, Time

    def read(text, now, tz):
        """ctparse's single best resolution of the whole text (1 s timeout), an interval's
        start; a resolution without a day is no date. ctparse prefers the future and has no
        setting for the past: a date it puts more than a week after `now` is read as a yearless
        date and moved one year back (the set's rule); one within the week ahead ("Friday",
        "this morning" read as tomorrow's) is dropped."""
        base = now.astimezone(tz).replace(tzinfo=None)
        logging.getLogger("ctparse").setLevel(logging.ERROR)  # "Failed to produce result" per miss
        result = ctparse(text, ts=base, timeout=1.0)
        value = result.resolution if result else None
        if isinstance(value, Interval):
            value = value.t_from
        if not isinstance(value, Time) or None in (value.year, value.month, value.day):
            return {}
        at = datetime(value.year, value.month, value.day, value.hour or 0, value.minute or 0)
        if at > base + timedelta(days=7):
            at = at.replace(year=at.year - 1)
        at = at.replace(tzinfo=tz)
        return _moment(at, value.hour is None, tz) if _plausible(at, now) else {}
    return read


def _jionlp():
    with redirect_stdout(io.StringIO()):  # it prints a banner on import
        import jionlp
    return jionlp


def jionlp_time_reader():
    jio = _jionlp()

    def read(text, now, tz):
        """jio.ner.extract_time with time_base = `now` in the desk's zone: the first time point,
        or the start of the first time span ("从今天早上9点15分开始", "2月20日凌晨2点至6点"), that
        is not in the future; one that covers a whole day is a date only. jionlp puts a yearless
        date in the future ("12月28号" written on 3 January is next December): like ctparse's,
        a date more than a week ahead moves one year back."""
        base = now.astimezone(tz).replace(tzinfo=None)
        for item in jio.ner.extract_time(text, time_base=base, with_parsing=True):
            detail = item.get("detail") or {}
            if item["type"] not in ("time_point", "time_span") or not isinstance(detail.get("time"), list):
                continue
            start, end = (datetime.fromisoformat(t) for t in detail["time"][:2])
            if start > base + timedelta(days=7):
                start, end = start.replace(year=start.year - 1), end.replace(year=end.year - 1)
            at = start.replace(tzinfo=tz)
            if _plausible(at, now):
                whole_day = start.time() == datetime.min.time() and end.time() >= datetime.max.time().replace(microsecond=0)
                return _moment(at, whole_day, tz)
        return {}
    return read


def jionlp_money_reader():
    jio = _jionlp()

    def read(text, now, tz):
        """jio.ner.extract_money: the first amount; its unit ("元", "美元", ...) as the currency."""
        for item in jio.ner.extract_money(text, with_parsing=True):
            detail = item.get("detail") or {}
            if isinstance(detail.get("num"), str):  # a range ("四五十块") is a dict: not one amount
                fields = {"amount": format(Decimal(detail["num"]).normalize(), "f")}
                currency = ISO.get(str(detail.get("case", "")).lower())
                return fields | ({"currency": currency} if currency else {})
        return {}
    return read


def price_parser_reader():
    import re

    from price_parser import Price
    words = re.compile(r"[^\s，。；！？、]+")

    def read(text, now, tz):
        """Price.fromstring over candidate spans: each word ("$12.50", "€12,50", "¥128"), and a
        word with a number joined to its neighbour ("12.50 USD", "USD 49.00", "RMB 128"). The
        amount is the first price that has a currency; the currency is read when every such
        price has the same one. (A whole sentence is too wide a span: its first number wins,
        "On 14 Nov ... €12,50" is 14.)"""
        tokens, prices = words.findall(text), []
        for i, token in enumerate(tokens):
            spans = [token] + [" ".join(tokens[j:j + 2]) for j in (i - 1, i) if 0 <= j < len(tokens) - 1]
            for span in spans if re.search(r"[0-9]", token) else ():
                price = Price.fromstring(span)
                if price.amount is not None and price.currency:
                    prices.append((price.amount, ISO.get(price.currency.strip().lower())))
                    break
        if not prices:
            return {}
        currencies = {currency for _, currency in prices}
        return {"amount": format(prices[0][0].normalize(), "f")} | (
            {"currency": currencies.pop()} if len(currencies) == 1 and None not in currencies else {})
    return read


def cn2an_then_ours_reader():
    import warnings

    import cn2an

    warnings.filterwarnings("ignore", module="cn2an")  # "不符合格式的数据：四五十": left as it was

    def read(text, now, tz):
        """cn2an.transform(text, "cn2an") (Chinese numerals to digits, in place), then refunddesk."""
        return read_fields(cn2an.transform(text, "cn2an"), now, tz)
    return read


def prepared(reader: Callable) -> Callable:
    """The library after refunddesk's own cleaning of the text (policy/extract.py)."""
    from refunddesk.policy.extract import mask_distractors, strip_quoted

    return lambda text, now, tz: reader(mask_distractors(strip_quoted(text)), now, tz)


def ours_else(library: Callable, fields: tuple[str, ...]) -> Callable:
    """refunddesk's reading, with the library's for the `fields` refunddesk left empty: what
    adding the library would gain (and invent) without giving up what ours reads."""
    def read(text, now, tz):
        found = read_fields(text, now, tz)
        if any(found.get(name) for name in fields):
            return found
        extra = library(text, now, tz)
        kept = {k: v for k, v in found.items() if k not in fields and k != "incident_date_only"}
        return kept | {k: v for k, v in extra.items() if k in fields or (k == "incident_date_only" and "incident_at" in fields)}
    return read


# name, fields it reads, the factory that imports the library and makes the reader
READERS: list[tuple[str, tuple[str, ...], Callable[[], Callable]]] = [
    ("refunddesk read_fields", ev.SCORED, lambda: read_fields),
    ("dateparser search_dates", DATE, dateparser_reader),
    ("dateparser +prep", DATE, lambda: prepared(dateparser_reader())),
    ("ctparse", DATE, ctparse_reader),
    ("ctparse +prep", DATE, lambda: prepared(ctparse_reader())),
    ("jionlp extract_time", DATE, jionlp_time_reader),
    ("jionlp extract_time +prep", DATE, lambda: prepared(jionlp_time_reader())),
    ("jionlp extract_money", MONEY, jionlp_money_reader),
    ("jionlp extract_money +prep", MONEY, lambda: prepared(jionlp_money_reader())),
    ("price-parser", MONEY, price_parser_reader),
    ("price-parser +prep", MONEY, lambda: prepared(price_parser_reader())),
    ("cn2an -> refunddesk", ev.SCORED, cn2an_then_ours_reader),
    ("refunddesk, else dateparser", DATE, lambda: ours_else(dateparser_reader(), DATE)),
    ("refunddesk, else jionlp time", DATE, lambda: ours_else(jionlp_time_reader(), DATE)),
    ("refunddesk, else price-parser", MONEY, lambda: ours_else(price_parser_reader(), MONEY)),
    ("refunddesk, else jionlp money", MONEY, lambda: ours_else(jionlp_money_reader(), MONEY)),
    ("refunddesk, else price-parser's currency", ("currency",),
     lambda: ours_else(price_parser_reader(), ("currency",))),
]


def _importable(make: Callable) -> bool:
    try:
        make()
        return True
    except ImportError:
        return False


class Guarded:
    """A library that raises on a mail has read nothing from it; the raises are counted."""

    def __init__(self, reader: Callable):
        self.reader, self.errors = reader, []

    def __call__(self, text, now, tz):
        try:
            return self.reader(text, now, tz)
        except Exception as error:  # noqa: BLE001  (a third party's bug is a finding, not a stop)
            self.errors.append(f"{type(error).__name__}: {error}"[:120])
            return {}


# The forms issue 13 names, one phrase each, read on Wednesday 2026-11-18 10:30 in Shanghai.
DATE_FORMS = ["On 14 Nov 2026", "nov 9", "the 6th of November at 10.15 in the morning", "2026/11/14",
              "14.11.2026", "11/14", "yesterday evening around 9", "last Friday", "3 days ago", "two days ago",
              "09:15 UTC on Nov 14", "3pm UTC-5 on Nov 14", "11月14日", "十一月十四号", "11月14号下午3点",
              "2026年11月14日", "昨天", "大前天", "上周五", "上星期三", "三天前", "昨天下午三点半",
              "前天早上9点15分", "昨天凌晨2点"]
MONEY_FORMS = ["twelve dollars fifty", "fifty bucks", "$12.50", "12.50 USD", "US$20", "¥128", "128元",
               "128块", "RMB 128", "CNY 1,280.00", "人民币128元", "十二块五", "一百二十八元", "两百块", "三百元",
               "€12,50", "12,50 €", "1.050,00 EUR", "charged $1,050 total, so you owe me $700",
               "Order #20261114-8831: refund $20"]


def print_forms(readers: list[tuple[str, tuple[str, ...], Callable]]) -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Asia/Shanghai")
    now = datetime(2026, 11, 18, 10, 30, tzinfo=tz)
    for forms, wanted in ((DATE_FORMS, DATE), (MONEY_FORMS, MONEY)):
        chosen = [(name, reader) for name, fields, reader in readers if set(fields) & set(wanted)]
        print("\n| phrase | " + " | ".join(name for name, _ in chosen) + " |")
        print("| --- " * (len(chosen) + 1) + "|")
        for phrase in forms:
            cells = []
            for _, reader in chosen:
                got = reader(phrase, now, tz)
                if "incident_at" in wanted:
                    at = got.get("incident_at")
                    cells.append(at[:16].replace("T00:00", "") + (" (day)" if got.get("incident_date_only") else "")
                                 if at else "-")
                else:
                    cells.append(" ".join(filter(None, (got.get("amount"), got.get("currency")))) or "-")
            print(f"| `{phrase}` | " + " | ".join(cells) + " |")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("sets", nargs="*", type=Path, default=[ev.DEFAULT_SET])
    parser.add_argument("--misses", metavar="NAME", help="also list what the reader NAME got wrong")
    parser.add_argument("--forms", action="store_true", help="only read the issue's forms, one phrase each")
    args = parser.parse_args()
    if args.forms:
        print_forms([(n, f, Guarded(m())) for n, f, m in READERS if "+" not in n and "," not in n
                     and _importable(m)])
        return

    entries = ev.load(args.sets)
    started = time.perf_counter()
    samples = [ev.sample(e) for e in entries]
    langs = {la: sum(s.lang == la for s in samples) for la in ev.LANGUAGES}
    print(f"{len(samples)} mails ({', '.join(f'{la} {n}' for la, n in langs.items())}) from "
          f"{', '.join(str(p) for p in args.sets)}; parsed in {time.perf_counter() - started:.1f} s\n")
    print("| reader | field | en % | zh % | mixed % | all % | invented | invented en/zh/mixed | ms/mail |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, fields, make in READERS:
        try:
            reader = Guarded(make())
        except ImportError as error:
            why = (f"not installed ({error.name}): pip install -e '.[bench]'"
                   if not (error.name or "").startswith("refunddesk") else f"cannot run: {error}")
            print(f"| {name} | {why} | | | | | | | |")
            continue
        for s in samples[:5]:  # first calls load dictionaries and models: not a mail's cost
            reader(s.text, s.now, s.tz)
        reader.errors.clear()
        result = ev.score(samples, reader, fields)
        for name_field in fields:
            cells = [_cell(result.percent(name_field, la)) for la in (*ev.LANGUAGES, None)]
            print(f"| {name} | {name_field} | " + " | ".join(cells)
                  + f" | {result.invented_by_field[name_field]} | "
                  + "/".join(str(result.invented_in[name_field, la]) for la in ev.LANGUAGES)
                  + f" | {result.ms_per_mail():.2f} |")
        if reader.errors:
            print(f"| {name} | raised on {len(reader.errors)} mails, e.g. {reader.errors[0]} | | | | | | | |")
        if args.misses and args.misses == name:
            print("\n".join(f"    {line}" for line in result.wrong))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
