"""The evaluation scorer itself: what a reader is given, and how its answers are counted."""
from __future__ import annotations

from reading_eval import sample, score

NOW = "2026-11-18T10:30:00+08:00"


def entry(expected: dict | None = None, **fields) -> dict:
    nothing = {"amount": None, "currency": None, "incident_at": None, "incident_date_only": False}
    return {"id": "t-001", "lang": "en", "now": NOW, "tz": "Asia/Shanghai", "subject": "Refund",
            **fields, "expected": nothing | (expected or {})}


def test_an_html_only_mail_reaches_the_reader_as_text_and_a_quote_does_not():
    html = sample(entry(html="<html><body><p>Please refund <b>$12.50</b></p><table><tr><td>2026-11-14</td>"
                             "<td>Top-up</td></tr></table></body></html>"))
    assert "$12.50" in html.text and "2026-11-14" in html.text and "<" not in html.text
    quoted = sample(entry(text="Refund 5 USD please.\n\nOn Mon, 16 Nov 2026 Support wrote:\n> We charged $99"))
    assert "5 USD" in quoted.text and "$99" not in quoted.text


def test_right_wrong_and_invented_are_counted_per_field():
    dated = entry(text="first mail", expected={"amount": "12.50", "currency": "USD",
                                               "incident_at": "2026-11-14T00:00:00+08:00", "incident_date_only": True})
    timed = entry(id="t-002", lang="zh", text="second mail", expected={"incident_at": "2026-11-14T15:00:00+08:00"})
    answers = {"first mail": {"amount": "12.5", "currency": "USD", "incident_at": "2026-11-14T09:00:00+08:00"},
               "second mail": {"amount": "3", "incident_at": "2026-11-14T15:00:00+08:00", "incident_date_only": "1"}}
    result = score([sample(dated), sample(timed)], lambda text, now, tz: answers[text])
    # t-001: all right (a date-only label compares the date); t-002: the moment read as a date
    # only is wrong, its amount is invented, a null currency read as nothing is right.
    assert result.percent("amount", "en") == 100 and result.percent("amount", "zh") == 0
    assert result.percent("currency") == 100
    assert result.percent("incident_at", "en") == 100 and result.percent("incident_at", "zh") == 0
    assert result.invented == ["t-002 amount: expected None, read '3'"]
    assert result.invented_by_field["amount"] == 1 and result.mails == 2
