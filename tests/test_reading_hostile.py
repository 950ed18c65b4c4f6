"""Hostile texts through the real `refunddesk deliver`: each becomes a case, none holds the
worker. The generators are the shapes that once made the reader cubic or quadratic (a run of
blank lines took 307 s at 5,000 lines) and their cousins; bench/reading.py times them.

The request sits before the noise, inside it or after it. Before it, it is read. Inside or
after 100,000 characters of noise it may lie past the reader's cap (policy/text.py
OWN_WORDS_LIMIT): then the case is opened all the same and asks for what it could not read.
"""
from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from conftest import base_settings, run_cli, write_config

REQUEST = "Please refund 12.50 USD, charged twice yesterday at 2:20pm. 请退还12.5美元。"
SIZE = 100_000
NOISE = {
    "spaces": " ", "newlines": "\n", "tabs": "\t", "crlf": "\r\n", "nbsp": "\u00a0", "ideographic": "\u3000",
    "digits": "7", "cjk-numerals": "一二三四五六七八九十百千万", "nov": "Nov ", "dollar": "$", "yuan": "元",
    "punctuation": ".,;:!?-/()", "weekday-zh": "上周五 ", "reply-header": "On Monday wrote: ",
    "thousands": "$1,", "clock-zh": "1 点", "dates": "1/", "mail-like": "a@",
}


def hostile(kind: str, where: str) -> str:
    unit = NOISE[kind]
    noise = unit * (SIZE // len(unit))
    half = len(noise) // 2
    return {"before": REQUEST + "\n" + noise, "inside": noise[:half] + REQUEST + noise[half:], "after": noise + "\n" + REQUEST}[where]


def mail(body: str, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"hostile{n}@customer.test"
    msg["To"] = "refunds@desk.test"
    msg["Subject"] = "Refund"
    msg["Message-ID"] = f"<hostile-{n}@customer.test>"
    msg.set_content(body, charset="utf-8")
    return msg.as_bytes()


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    return write_config(tmp / "refunddesk.toml", base_settings(tmp))


_serial = iter(range(1, 10_000))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(NOISE)), where=st.sampled_from(["before", "inside", "after"]))
@example(kind="newlines", where="before")
@example(kind="spaces", where="inside")
@example(kind="weekday-zh", where="before")
@example(kind="digits", where="before")
@example(kind="cjk-numerals", where="after")
@example(kind="thousands", where="before")
@example(kind="clock-zh", where="inside")
@example(kind="mail-like", where="before")
def test_a_hostile_text_becomes_a_case_and_the_request_before_it_is_read(config, kind, where):
    delivered = run_cli(config, "deliver", stdin=mail(hostile(kind, where), next(_serial)), timeout=90)
    out = delivered.stdout.decode().strip()
    assert delivered.returncode == 0 and out.startswith("RF-"), (kind, where, out, delivered.stderr.decode()[-2000:])
    shown = json.loads(run_cli(config, "cases", "show", out, "--json").stdout)
    assert shown["status"] == "collecting"
    if where == "before":
        assert (shown["amount"], shown["currency"]) == ("12.50", "USD"), (kind, shown["fields"])
    # The whole text is kept for agents, not only what was read (intake trims whitespace at its ends).
    assert len(shown["messages"][0]["text"]) > SIZE * 0.9 or NOISE[kind].isspace()
