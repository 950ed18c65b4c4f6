"""Unit tests of the field readers in refunddesk.policy.extract, one table per reader.

`NOW` is Sunday 2026-11-22 10:00 in Asia/Shanghai unless a row says otherwise.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refunddesk.policy.extract import (FIELD_NAMES, Money, Moment, detect_language, read_account_id,
                                       read_fields, read_hours, read_labelled, read_money, read_moment,
                                       read_percent)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=SHANGHAI)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def money(amount: str, currency: str | None) -> Money:
    return Money(Decimal(amount), currency)


# ---------------------------------------------------------------- money

@pytest.mark.parametrize("text, expected", [
    ("12.50 USD", money("12.50", "USD")),
    ("$12.50", money("12.50", "USD")),
    ("US$ 12.5", money("12.5", "USD")),
    ("USD12.50", money("12.50", "USD")),
    ("refund pls 5$", money("5", "USD")),
    ("like 3 bucks", money("3", "USD")),
    ("12 dollars", money("12", "USD")),
    ("¥100", money("100", "CNY")),
    ("￥15.8", money("15.8", "CNY")),
    ("100元", money("100", "CNY")),
    ("100 RMB", money("100", "CNY")),
    ("人民币100元", money("100", "CNY")),
    ("扣了我30块", money("30", "CNY")),
    ("5 块钱", money("5", "CNY")),
    ("20 美元", money("20", "USD")),
    ("50 美金", money("50", "USD")),
    ("扣了我二十元", money("20", "CNY")),
    ("十二元", money("12", "CNY")),
    ("1.5万元", money("15000", "CNY")),
    ("¥1,299.00", money("1299.00", "CNY")),
    ("1299元", money("1299", "CNY")),
    ("1,299.00 USD", money("1299.00", "USD")),
    ("12,50 €", money("12.50", "EUR")),
    ("9.90 EUR", money("9.90", "EUR")),
    ("1.200,00 EUR", money("1200.00", "EUR")),
    ("£15", money("15", "GBP")),
    # a bare number is an amount only after a word that makes it one
    ("charged 30", money("30", None)),
    ("扣了30", money("30", None)),
    ("refund of 12", money("12", None)),
    ("refund 15", money("15", None)),
])
def test_read_money_reads_amounts_and_currencies(text, expected):
    assert read_money(text) == expected


@pytest.mark.parametrize("text", [
    "12.5", "1,299.00", "I waited 30 minutes", "charged 3 times", "扣了3次", "扣了我 70 多块",
    "大概扣了我四五十块吧", "100 USDT", "balance is $0",
])
def test_read_money_takes_no_bare_or_vague_number_from_free_text(text):
    assert read_money(text) is None


@pytest.mark.parametrize("text, expected", [
    ("12.5", money("12.5", None)),
    ("1,299.00", money("1299.00", None)),
    ("about 30 yuan", money("30", "CNY")),
    ("$12.50, same as last time", money("12.50", "USD")),
    ("30", money("30", None)),
    ("不知道", None),
    ("12 or 13", None),
    ("2026-11-20", None),
    ("昨天下午3点", None),
])
def test_read_money_accepts_a_bare_number_as_an_answer(text, expected):
    assert read_money(text, answer=True) == expected


@pytest.mark.parametrize("text", [
    "Order #20261120001 failed",
    "订单号 2026112012345 没有到账",
    "I sent 1,200,000 tokens",
    "1.5M tokens in an hour",
    "call me at +86 138 0013 8000",
    "手机 13800138000",
    "tel 415-555-0134",
    "联系电话：0755-86001234",
    "HTTP 502 everywhere",
    "error 429 again",
    "错误码 10086",
    "一直返回 429",
    "500 Internal Server Error",
    "SDK 3.2.1 broke",
    "version 1.4.2",
    "server 10.0.3.12",
    "gpt-4o is slow",
    "claude-3.5-sonnet",
    "request id 3f9a0c",
    "请求ID 20261120143012abcd",
    "card ending 4242",
    "case RF-000123",
    "2,300 calls",
])
def test_read_money_ignores_distractors(text):
    assert read_money(text) is None
    assert read_money(text, answer=True) is None


@pytest.mark.parametrize("text, expected", [
    ("Order #20261120001 was billed twice, $29 each time", money("29", "USD")),
    ("调用 gpt-4o 报错 502，扣了我 30 块，订单号 2026112012345", money("30", "CNY")),
    ("1,200,000 tokens and HTTP 502, but my balance was deducted by $37.80", money("37.80", "USD")),
    ("Call +86 138 0013 8000. I was charged $8.40 for error 429s.", money("8.40", "USD")),
])
def test_read_money_finds_the_charge_among_distractors(text, expected):
    assert read_money(text) == expected


@pytest.mark.parametrize("text, expected", [
    # nothing tells which amount is the charge: ask
    ("I topped up $100 and I'm now at $12.40", None),
    ("My balance was $40.00 before and $27.55 after", None),
    ("昨天扣了两次，一次 10 元一次 15 元", None),
    ("charges of $5, $5 and $5", None),
    ("charged £15 instead of £10", None),
    ("扣了 80 元？按价格应该只要 20 元", None),
    ("I'd like a partial refund of my $30 plan", None),
    ("charged $8 on Monday and another $8 on Tuesday, both for jobs that never ran", None),
    # something does tell
    ("余额少了 200 元，之前还有 500 元", money("200", "CNY")),
    ("每次扣 0.5 元，总共扣了 36 元", money("36", "CNY")),
    ("140 retries at $0.05 each = $7", money("7", "USD")),
    ("充值500元，申请退还异常扣除的 120.00 元", money("120.00", "CNY")),
    ("I paid $20 but the balance still shows $0", money("20", "USD")),
    ("$9.99 charged twice. Yes, $9.99 twice", money("9.99", "USD")),
    ("扣了 25 元 又扣了 25 元", money("25", "CNY")),
])
def test_read_money_never_picks_between_competing_amounts(text, expected):
    assert read_money(text) == expected


def test_read_money_prefers_the_labelled_line():
    text = "Amount: $15\n\nI first thought it was $12 but the dashboard says 15."
    assert read_money(text) == money("15", "USD")
    assert read_money("金额：45元\n一开始以为是 40 元") == money("45", "CNY")
    assert read_money("退款金额：30\n币种：美元") == money("30", "USD")


def test_read_money_reads_free_text_after_a_label_on_the_same_line():
    assert read_money("Account: u_1. I was charged $5 yesterday.") == money("5", "USD")
    assert read_money("Description: charged $12.50 twice yesterday") == money("12.50", "USD")


def test_read_money_ignores_quoted_letters():
    text = ("Sure, it was $19.99.\n\nOn Fri, Nov 20, 2026 at 6:02 PM Support <s@x.ai> wrote:\n"
            "> Refunds above $100 need extra review.\n")
    assert read_money(text) == money("19.99", "USD")
    assert read_money("请退款 20 元。\n\n发件人: 302.AI\n主题: 充值成功 100 元") == money("20", "CNY")
    assert read_money("> You were charged $30\nno amount from me") is None


# ---------------------------------------------------------------- moments

@pytest.mark.parametrize("text, expected, date_only", [
    ("2026-11-20 10:00", "2026-11-20T10:00", False),
    ("2026/11/20 10:00", "2026-11-20T10:00", False),
    ("2026年11月20日 14:30:12", "2026-11-20T14:30:12", False),
    ("Nov 20, 2026 at 10am", "2026-11-20T10:00", False),
    ("November 21, 2026 at 11:42 pm", "2026-11-21T23:42", False),
    ("on 21/11/2026 at 18:45", "2026-11-21T18:45", False),
    ("on 11/21 at 3:15 pm", "2026-11-21T15:15", False),
    ("yesterday 3pm", "2026-11-21T15:00", False),
    ("yesterday at around 3pm", "2026-11-21T15:00", False),
    ("at 9:41 this morning", "2026-11-22T09:41", False),
    ("this morning", "2026-11-22T00:00", True),
    ("last night", "2026-11-21T00:00", True),
    ("3am last night", "2026-11-22T03:00", False),
    ("2 days ago", "2026-11-20T00:00", True),
    ("3 hours ago", "2026-11-22T07:00", False),
    ("on Friday", "2026-11-20T00:00", True),
    ("20 Nov", "2026-11-20T00:00", True),
    ("Since Nov 19", "2026-11-19T00:00", True),
    ("since the 15th", "2026-11-15T00:00", True),
    ("4 in the afternoon on Nov 19", "2026-11-19T16:00", False),
    ("昨天下午3点", "2026-11-21T15:00", False),
    ("今天上午10点", "2026-11-22T10:00", False),
    ("今天凌晨2点", "2026-11-22T02:00", False),
    ("昨晚11点多", "2026-11-21T23:00", False),
    ("前天下午 3 点 40 分", "2026-11-20T15:40", False),
    ("前天晚上八点左右", "2026-11-20T20:00", False),
    ("星期三晚上9点半", "2026-11-18T21:30", False),
    ("11月20日", "2026-11-20T00:00", True),
    ("11月20日晚上8点", "2026-11-20T20:00", False),
    ("11月19号晚上", "2026-11-19T00:00", True),
    ("11/20 下午两点左右", "2026-11-20T14:00", False),
    ("时间 11-21 16:10", "2026-11-21T16:10", False),
    ("本月20日14时左右", "2026-11-20T14:00", False),
    ("前天", "2026-11-20T00:00", True),
    ("大前天", "2026-11-19T00:00", True),
    ("上周五", "2026-11-13T00:00", True),  # Sunday: last week's Friday, not two days ago
    ("周五", "2026-11-20T00:00", True),
    ("三天前开始", "2026-11-19T00:00", True),
    ("半小时前", "2026-11-22T09:30", False),
    ("刚刚扣了我 5 块", "2026-11-22T10:00", False),
])
def test_read_moment_reads_english_and_chinese(text, expected, date_only):
    assert read_moment(text, NOW, SHANGHAI) == Moment(at(expected), date_only)


def test_read_moment_weekdays_relative_to_a_wednesday():
    wednesday = datetime(2026, 11, 25, 16, 30, tzinfo=SHANGHAI)
    assert read_moment("上周五开始用不了", wednesday, SHANGHAI) == Moment(at("2026-11-20T00:00"), True)
    assert read_moment("这周二（11月24日）", wednesday, SHANGHAI) == Moment(at("2026-11-24T00:00"), True)


@pytest.mark.parametrize("text, now, expected", [
    ("charged on Dec 28", datetime(2027, 1, 5, 9, tzinfo=SHANGHAI), "2026-12-28"),
    ("charged on 12月28日", datetime(2027, 1, 5, 9, tzinfo=SHANGHAI), "2026-12-28"),
    ("charged on Nov 20", NOW, "2026-11-20"),
    ("charged on Dec 25", datetime(2026, 11, 1, 9, tzinfo=SHANGHAI), "2025-12-25"),
    ("charged on Nov 22", NOW, "2026-11-22"),
])
def test_read_moment_year_less_dates_are_the_most_recent_past_one(text, now, expected):
    assert read_moment(text, now, SHANGHAI) == Moment(at(expected + "T00:00"), True)


@pytest.mark.parametrize("text", [
    "tomorrow 3pm", "tomorrow 9am", "明天上午9点", "today 11:30", "2026-12-01", "next Friday",
    "下周一", "Nov 25", "I'll be travelling from Nov 25", "in 2 hours", "2027-01-01 00:00",
])
def test_read_moment_never_returns_the_future(text):
    assert read_moment(text, NOW, SHANGHAI) is None
    assert read_moment(text, NOW, SHANGHAI, answer=True) is None


def test_read_moment_allows_an_hour_of_clock_skew():
    assert read_moment("at 10:15 today", NOW, SHANGHAI) == Moment(at("2026-11-22T10:15"), False)
    assert read_moment("today 10:59", NOW, SHANGHAI) == Moment(at("2026-11-22T10:59"), False)
    assert read_moment("today 11:01", NOW, SHANGHAI) is None


@pytest.mark.parametrize("text", [
    "Your service was down (Nov 19 and Nov 20).",
    "On Nov 21 I was charged $8 and on Nov 22 another $8",
    "Yesterday I saw it, and on Nov 18 too",
    "I was charged at 3:15 and again on Nov 18",
])
def test_read_moment_asks_when_two_times_compete(text):
    assert read_moment(text, NOW, SHANGHAI) is None


@pytest.mark.parametrize("text, expected, date_only", [
    ("between 14:00 and 16:00 yesterday", "2026-11-21T14:00", False),
    ("from Nov 18 to Nov 20", "2026-11-18T00:00", True),
    ("between Nov 19 and Nov 20", "2026-11-19T00:00", True),
    ("(Nov 20 02:00 – Nov 21 08:00)", "2026-11-20T02:00", False),
    ("11月21日上午9点到11点之间", "2026-11-21T09:00", False),
    ("I purchased the plan on Nov 3 and it's been failing since yesterday", "2026-11-21T00:00", True),
    ("我 11 月 10 日申请的退款，昨天又扣了", "2026-11-21T00:00", True),
    ("renewed yesterday even though I cancelled on Nov 10", "2026-11-21T00:00", True),
    ("yesterday 3pm, yes yesterday at 15:00", "2026-11-21T15:00", False),
    ("yesterday ... at 3pm yesterday", "2026-11-21T15:00", False),
    ("The charge was Nov 14, not Nov 12.", "2026-11-14T00:00", True),
    ("it happened on Nov 21, not on the 20th", "2026-11-21T00:00", True),
    ("spent 86.40 yesterday at 3:40am. I want it refunded TODAY", "2026-11-21T03:40", False),
    ("renewed on Oct 2 although I turned off auto-renew on Sep 20", "2026-10-02T00:00", True),
    ("charged double yesterday evening around 9, each one USD 49", "2026-11-21T21:00", False),
    ("On Nov 20 night 11pm my token was stolen", "2026-11-20T23:00", False),
])
def test_read_moment_takes_range_starts_and_skips_other_dates(text, expected, date_only):
    assert read_moment(text, NOW, SHANGHAI) == Moment(at(expected), date_only)


@pytest.mark.parametrize("text", [
    "Order #20261120001 failed",
    "订单号 2026112012345",
    "call 13800138000",
    "+86 138 0013 8000",
    "error 429",
    "版本 2.1.14",
    "I bought it on Nov 3",
    "11月15日 买的月卡",
    "24/7 support",
    "1/2 of my credits",
    "the 3rd time I write",
    "上个月充的钱",
])
def test_read_moment_ignores_distractors_and_non_incident_dates(text):
    assert read_moment(text, NOW, SHANGHAI) is None


@pytest.mark.parametrize("text, expected", [
    ("Sure, charged this morning.\n\nOn Fri, Nov 20, 2026 at 6:02 PM Support <s@x.ai> wrote:\n"
     "> dated 2026-11-17", Moment(at("2026-11-22T00:00"), True)),
    ("金额是 58 元，前天晚上 9 点。\n\n在 2026年11月20日 星期五 18:30，客服 <s@x.ai> 写道：\n"
     "> 2026年11月27日前回复", Moment(at("2026-11-20T21:00"), False)),
    ("金额是 58 元。\n\n在 2026年11月20日 星期五 18:30，客服 <s@x.ai> 写道：\n> 2026年11月19日扣费", None),
    ("截图见附件\n\n发件人: refunds@x.com\n发送时间: 2026年11月19日 下午3:12\n主题: 2026-11-17", None),
    ("this morning\n> On 2026-11-18 09:12 we wrote", Moment(at("2026-11-22T00:00"), True)),
    ("今天上午\n\n客服小王 于 2026年11月18日 10:00 写道：\n2026年11月17日的扣费已退", Moment(at("2026-11-22T00:00"), True)),
    ("今天上午\n\n寄件者: billing@x.com\n2026年11月17日", Moment(at("2026-11-22T00:00"), True)),
    ("this morning\n\n-----Original Message-----\nFrom: billing@x.com\nSent: Thursday, November 19, 2026",
     Moment(at("2026-11-22T00:00"), True)),
])
def test_read_moment_ignores_times_in_quoted_letters(text, expected):
    assert read_moment(text, NOW, SHANGHAI) == expected


def test_read_moment_converts_written_zones_into_the_policy_zone():
    assert read_moment("2026-11-21 08:05 UTC", NOW, SHANGHAI) == Moment(at("2026-11-21T16:05"), False)
    assert read_moment("2026-11-21T13:20:00Z", NOW, SHANGHAI) == Moment(at("2026-11-21T21:20"), False)
    berlin = ZoneInfo("Europe/Berlin")
    moment = read_moment("yesterday 3pm", NOW, berlin)
    assert moment.at.tzinfo is berlin and moment.at.isoformat() == "2026-11-21T15:00:00+01:00"


def test_read_moment_uses_the_given_now_never_the_clock():
    far = datetime(2031, 3, 4, 12, tzinfo=SHANGHAI)
    assert read_moment("yesterday", far, SHANGHAI) == Moment(at("2031-03-03T00:00"), True)


@pytest.mark.parametrize("text, expected, date_only", [
    ("11/20", "2026-11-20T00:00", True),
    ("the 20th", "2026-11-20T00:00", True),
    ("周五下午", "2026-11-20T00:00", True),
    ("yesterday", "2026-11-21T00:00", True),
    ("Nov 21 9pm", "2026-11-21T21:00", False),
])
def test_read_moment_answer_accepts_bare_dates(text, expected, date_only):
    assert read_moment(text, NOW, SHANGHAI, answer=True) == Moment(at(expected), date_only)


def test_read_moment_prefers_the_labelled_line():
    text = "异常扣费时间：2026-11-20 10:00\n问题描述：昨天又扣了一次"
    assert read_moment(text, NOW, SHANGHAI) == Moment(at("2026-11-20T10:00"), False)
    labelled = read_moment("Time of the charge: yesterday 3pm", NOW, SHANGHAI)
    assert labelled == Moment(at("2026-11-21T15:00"), False)


# ---------------------------------------------------------------- account, percent, hours

@pytest.mark.parametrize("text, expected", [
    ("charged twice for $12.50 yesterday, acct u_88213", "u_88213"),
    ("Account ID: acme-prod-7", "acme-prod-7"),
    ("Account: dev@lumenlabs.io. Please refund", "dev@lumenlabs.io"),
    ("My account is tomasz_w", "tomasz_w"),
    ("my account (id 90011) was charged", "90011"),
    ("My user id is 40917.", "40917"),
    ("acct=beta_team", "beta_team"),
    ("acct #: 33190", "33190"),
    ("id: frog_prince", "frog_prince"),
    ("账号：13800138000", "13800138000"),
    ("账号 lihua2020", "lihua2020"),
    ("我的账号是 zhangwei@163.com，谢谢", "zhangwei@163.com"),
    ("我的用户名：青蛙王子 (frog_king_88)", "frog_king_88"),
    ("UID: 600721", "600721"),
    ("账户 ID：xiaoming", "xiaoming"),
    ("my account was charged twice", None),
    ("I never even created an account.", None),
    ("request id: req_8f2a91c0d", None),
    ("请求ID 20261120143012abcd", None),
    ("手机 13800138000", None),
    ("acct u_1 and acct u_2", None),
    ("> Account: u_778", None),
])
def test_read_account_id(text, expected):
    assert read_account_id(text) == expected


def test_read_account_id_answer_takes_the_single_token():
    assert read_account_id("u_88213", answer=True) == "u_88213"
    assert read_account_id("是 abc123 谢谢", answer=True) == "abc123"
    assert read_account_id("u_88213") is None
    assert read_account_id("手机 13800138000", answer=True) is None


@pytest.mark.parametrize("text, expected", [
    ("I've used about 30% of my quota", "30"),
    ("已用 30%", "30"),
    ("额度用了百分之二十", "20"),
    ("used only 12.5 percent of the plan", "12.5"),
    ("用了不到 10% 就发现不能用", "10"),
    ("I bought it by mistake and haven't used it", "0"),
    ("Your status page promises 99.9% SLA", None),
    ("你们的服务 99.9% 的可用性是骗人的", None),
    ("we got a 20% discount on the plan", None),
    ("used 30% of my quota, no wait, 40% of my quota", None),
])
def test_read_percent(text, expected):
    assert read_percent(text) == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize("text, expected", [("30", "30"), ("30%", "30"), ("一半", "50"), ("about half", "50"),
                                            ("99.9% SLA", None), ("no idea", None)])
def test_read_percent_answer(text, expected):
    assert read_percent(text, answer=True) == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize("text, expected", [
    ("the API was down for 2 days", "48"),
    ("down for 36 hours", "36"),
    ("服务中断了36小时", "36"),
    ("宕机两天", "48"),
    ("服务中断了一天半", "36"),
    ("昨天挂了一整天", "24"),
    ("outage of 90 minutes", "1.5"),
    ("down for a week", "168"),
    ("returned error 500 for 3 hours", "3"),
    ("36 hours", None),  # no outage named
    ("it was down 3 days ago", None),
    ("we reply within 24 hours; it's been down", None),
    ("24小时内处理，服务中断", None),
    ("第二天就不能用了", None),
    ("down for 2 days, then again for 5 hours", None),
])
def test_read_hours(text, expected):
    assert read_hours(text) == (None if expected is None else Decimal(expected))


def test_read_hours_values_print_plainly():
    """Callers format with str(): "120", never "1.2E+2"."""
    assert str(read_hours("the API was down for 5 days")) == "120"
    assert str(read_hours("5 days", answer=True)) == "120"
    assert str(read_money("1.5万元").amount) == "15000"


@pytest.mark.parametrize("text, expected", [("36", "36"), ("36 hours", "36"), ("两天", "48"),
                                            ("2 days", "48"), ("3 days ago", None), ("不知道", None)])
def test_read_hours_answer(text, expected):
    assert read_hours(text, answer=True) == (None if expected is None else Decimal(expected))


# ---------------------------------------------------------------- labels, fields, language

def test_read_labelled_maps_english_and_chinese_labels():
    text = ("Account ID: acme-7\nAmount: 12.50 USD\nTime of the charge: 2026-11-20 10:00\n"
            "Purchase date: 2026-11-01\nDescription: timed out\n"
            "账号：u_1\n金额：100元\n异常扣费时间：昨天\n购买日期：2026-11-02\n问题描述：\n第一行\n第二行\n\n签名")
    assert read_labelled(text) == {
        "account_id": "acme-7", "amount": "12.50 USD", "incident_at": "2026-11-20 10:00",
        "purchase_at": "2026-11-01", "description": "timed out"}
    zh = read_labelled("账号：u_1\n金额：100元\n异常扣费时间：昨天\n购买日期：2026-11-02\n问题描述：\n第一行\n第二行\n\n签名")
    assert zh == {"account_id": "u_1", "amount": "100元", "incident_at": "昨天",
                  "purchase_at": "2026-11-02", "description": "第一行\n第二行"}


def test_read_labelled_reads_several_labels_on_one_line_and_skips_quotes():
    assert read_labelled("账号: u_31337 金额: 5美金 时间: 昨天") == {
        "account_id": "u_31337", "amount": "5美金", "incident_at": "昨天"}
    assert read_labelled("thanks\n> Amount: $100\n> Account: u_778") == {}
    assert read_labelled("Request id: req_8f2a91c0d") == {}


def test_read_fields_returns_documented_strings():
    text = ("Account ID: acme-prod-7\nAmount: 12.50 USD\nTime of the charge: yesterday\n"
            "Purchase date: 2026-11-01\nDescription: The request timed out.\n"
            "Re RF-000123. Down for 36 hours; I used 30% of my quota.")
    assert read_fields(text, NOW, SHANGHAI) == {
        "amount": "12.50", "currency": "USD", "incident_at": "2026-11-21T00:00:00+08:00",
        "incident_date_only": "1", "account_id": "acme-prod-7",
        "purchase_at": "2026-11-01T00:00:00+08:00", "case_ref": "RF-000123",
        "description": "The request timed out.", "outage_hours": "36", "quota_used_pct": "30"}


def test_read_fields_leaves_out_what_it_is_not_sure_of():
    fields = read_fields("I topped up $100 and now I'm at $12.40. acct 55120", NOW, SHANGHAI)
    # Which amount is claimed is unsure; the currency every amount is written in is not.
    assert fields == {"account_id": "55120", "currency": "USD"}
    assert "currency" not in read_fields("I paid $10 and ¥50, refund one", NOW, SHANGHAI)
    assert "description" not in read_fields("I was charged twice yesterday, please help", NOW, SHANGHAI)
    assert read_fields("ap-000045 is my appeal", NOW, SHANGHAI) == {"case_ref": "AP-000045"}


@pytest.mark.parametrize("text, expected", [
    ("Hello, I was charged twice", "en"),
    ("你好，我被重复扣费了", "zh"),
    ("Hi, 我昨天被扣了 $12，请退款", "zh"),
    ("charged $12 yesterday, 谢谢", "en"),
    ("12.50", "en"),
    ("thanks\n\n在 2026年11月20日 客服 写道：\n> 您好，请补充扣费金额和扣费时间", "en"),
])
def test_detect_language(text, expected):
    assert detect_language(text) == expected


def test_detect_language_agrees_with_the_labelled_set():
    data = json.loads((Path(__file__).parent / "data" / "labelled_requests.json").read_text("utf-8"))
    for entry in data:
        if entry["lang"] in ("en", "zh"):
            assert detect_language(entry["text"]) == entry["lang"], entry["id"]


# ---------------------------------------------------------------- properties

_WORDS = ["$12.50", "¥100", "100元", "扣了", "charged", "refund", "yesterday", "昨天", "下午3点", "3pm",
          "11月20日", "Nov 20", "2026-11-20", "10:00", "上周五", "前天", "30%", "quota", "down for",
          "2 days", "两天", "acct", "账号：", "u_88213", "Amount:", "金额：", "Order #2026112000",
          "13800138000", "HTTP 502", "gpt-4o", "> ", "\n", "On Fri wrote:\n", "发件人:", "，", ". ", "RF-000123",
          "between", "and", "到", "明天", "ago", "前", "each", "总共", "=", "0", "9", "12,50 €", "/", "-"]
_SOUP = st.lists(st.sampled_from(_WORDS), max_size=25).map(" ".join)
_NOWS = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2098, 12, 31),
                     timezones=st.just(SHANGHAI))
# EXTRACT_FUZZ_EXAMPLES=5000 for a long local hunt; no example database: nothing is written to disk.
_FAST = settings(max_examples=int(os.environ.get("EXTRACT_FUZZ_EXAMPLES", "150")), deadline=None,
                 database=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(text=st.one_of(st.text(), _SOUP), now=_NOWS, answer=st.booleans())
def test_no_reader_raises_on_arbitrary_text(text, now, answer):
    read_money(text, answer=answer)
    read_account_id(text, answer=answer)
    read_percent(text, answer=answer)
    read_hours(text, answer=answer)
    read_labelled(text)
    assert detect_language(text) in ("en", "zh")
    moment = read_moment(text, now, SHANGHAI, answer=answer)
    if moment is not None:
        assert moment.at.tzinfo is not None
        assert moment.at <= now.replace(microsecond=0) + timedelta(hours=1, minutes=1)


@_FAST
@given(text=st.one_of(st.text(), _SOUP), now=_NOWS)
def test_read_fields_returns_only_documented_keys_as_strings(text, now):
    fields = read_fields(text, now, SHANGHAI)
    assert set(fields) <= FIELD_NAMES
    assert all(isinstance(value, str) and value for value in fields.values())
    if "amount" in fields:
        assert Decimal(fields["amount"]) > 0 and "E" not in fields["amount"]
    if "incident_at" in fields:
        datetime.fromisoformat(fields["incident_at"])
    if "incident_date_only" in fields:
        assert fields["incident_date_only"] == "1" and "incident_at" in fields


def test_read_all_lists_what_the_reader_chose_between_and_nothing_when_there_was_no_choice():
    from refunddesk.policy.extract import read_all
    tz = ZoneInfo("Asia/Shanghai")
    now = datetime(2026, 11, 20, 10, tzinfo=tz)
    two = read_all("I was charged $1,050 total, so please refund $700. It was on Nov 14; my ticket of Nov 16 got no answer.", now, tz)
    assert two.fields["amount"] == "700" and two.candidates["amount"] == ("700", "1050")
    assert two.candidates["incident_at"] == (two.fields["incident_at"], "2026-11-16")
    assert read_all("refund 5 usd, charged yesterday at 3pm, yesterday!", now, tz).candidates == {}
    # A labelled value is no choice of the reader's, and read_fields is read_all's fields.
    labelled = "Amount: 12 USD\nI topped up 50 USD."
    assert read_all(labelled, now, tz).candidates.get("amount") is None
    assert read_all(labelled, now, tz).fields == read_fields(labelled, now, tz)


def test_read_moment_finds_the_row_of_a_table_converted_from_html():
    """An HTML table reaches the reader as lines whose cells are set apart by wide gaps; those
    gaps must survive the whitespace normalisation, or every row reads as prose."""
    text = ("my statement shows the same top-up twice:\n"
            "Date  Time  Description  Amount\n"
            "2026/11/14  09:02  API credit top-up  $20.00\n"
            "2026/11/14    09:03\t\tAPI credit top-up  $20.00\n"
            "Total  $40.00\n"
            "The second charge (09:03) is a duplicate, please refund $20.00.")
    assert read_moment(text, NOW, SHANGHAI) == Moment(at("2026-11-14T09:03"), False)


@pytest.mark.parametrize("text, expected", [
    # the day of writing, with what is demanded on it, is not when the charge happened
    ("十一月十四号被你们扣了一百二十八元，到现在一个多月了！今天必须给我个说法！", Moment(at("2026-11-14T00:00"), True)),
    ("11月14号被扣了128元，今天上班第一天，马上退！", Moment(at("2026-11-14T00:00"), True)),
    # "零点" is midnight; "零点五" would be 0.5
    ("11月1号零点你们自动续费扣了我两千块", Moment(at("2026-11-01T00:00"), False)),
    # a time in brackets after its day
    ("于上周五（具体时间约为下午三点半）被扣除人民币128元", Moment(at("2026-11-13T15:30"), False)),
])
def test_read_moment_chinese_days_and_clocks(text, expected):
    assert read_moment(text, NOW, SHANGHAI) == expected


def test_read_moment_a_letters_own_date_line_does_not_hide_the_charge_above_it():
    letter = ("本公司于2026年11月18日上午十点一刻在贵平台购买 GPU 算力时长，因调度故障实例未能启动，但费用已被扣除。\n\n"
              "现申请退还该笔费用人民币伍佰元整（¥500.00）。\n\n申请单位：南京星图智能科技有限公司\n"
              "日期：2026年11月22日")
    assert read_moment(letter, NOW, SHANGHAI) == Moment(at("2026-11-18T10:15"), False)
    # with nothing else to go by, the labelled date is still read
    assert read_moment("申请退还人民币500元。\n日期：2026年11月22日", NOW, SHANGHAI) == Moment(at("2026-11-22T00:00"), True)


@pytest.mark.parametrize("text, expected", [
    # a guess with 应该 is no comparison of prices
    ("前天结果直接扣了五十块钱，应该用不了这么多吧，能退就退一下", money("50", "CNY")),
    ("我的账户被扣了两次 ¥58，应该是系统故障，请退回其中一次。", money("58", "CNY")),
    # a price it should have been still makes the amount a matter of comparison: ask
    ("扣了 ¥80，应该是 ¥50 才对", None),
    # rates are no claim: "$3.00 / 1M input", "$1.89/hr"
    ("Usage billed at $3.00 / 1M input, $15.00 / 1M output. The cost of those failed calls is USD 73.20, please refund that.",
     money("73.20", "USD")),
    # a count of hours after "refund the" is no amount; the one with its sign is
    ("Instance (A100, $1.89/hr) crashed. Please refund the 66 unused hours, i.e. $124.74. "
     "The first 6 hours ($11.34) are fine.", money("124.74", "USD")),
    # a refund already made is not the one asked for
    ("You already refunded $10 to me in March, thank you. Now there is a new one: a $25 charge "
     "for a pack I didn't buy (my last purchase was pack S at $15). Please refund the $25 charge.", money("25", "USD")),
    ("上次你们已经退过20元了，这次又扣了35元，请退35元。", money("35", "CNY")),
    # an amount corrected away, and what an invoice says, are not the claim
    ("不对，金额是 ¥75，不是 ¥57。麻烦按这个重新查。", money("75", "CNY")),
    ("The charge was $40, not $14 as your letter says.", money("40", "USD")),
    ("开票金额 ¥1,000.00。其中 ¥400 是重复计费的。请退 ¥400，并重新开具 ¥600 的发票。", money("400", "CNY")),
    # "¥128 token pack" is a price, not a count of tokens
    ("Please refund the ¥128 token pack from June 5, I never ordered it.", money("128", "CNY")),
    # the colloquial Chinese unit, written in English
    ("I am lost about 60 kuai credit for nothing. Please refund this 60 kuai.", money("60", "CNY")),
])
def test_read_money_sets_aside_what_is_not_the_claim(text, expected):
    assert read_money(text) == expected


def test_read_moment_a_zone_named_before_the_date_holds_for_its_clock():
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 10, 12, 9, 0, tzinfo=berlin)
    text = "我在德国留学。北京时间2026年10月8日下午3点，平台升级期间我的请求全部失败，但仍被扣除了 12.50 欧元。"
    assert read_moment(text, now, berlin).at == datetime(2026, 10, 8, 15, 0, tzinfo=SHANGHAI)
    # without it, the desk's own zone
    assert read_moment(text.replace("北京时间", ""), now, berlin).at == datetime(2026, 10, 8, 15, 0, tzinfo=berlin)


def test_read_moment_takes_the_time_from_the_rows_of_the_day_the_customer_names():
    text = ("下面是我账户后台导出的扣费记录，11月18日上午有两笔完全一样的，第二笔是重复扣的，请退 66 元。\n"
            "时间  项目  金额  状态\n"
            "2026-11-15 20:11  API额度充值  ¥30.00  成功\n"
            "2026-11-18 10:05  API额度充值  ¥66.00  成功\n"
            "2026-11-18 10:05  API额度充值  ¥66.00  成功\n")
    assert read_moment(text, NOW, SHANGHAI) == Moment(at("2026-11-18T10:05"), False)
    # rows of that day at two different times: the day alone is sure
    other = text.replace("2026-11-18 10:05  API额度充值  ¥66.00  成功\n", "2026-11-18 11:40  API额度充值  ¥66.00  成功\n", 1)
    assert read_moment(other, NOW, SHANGHAI) == Moment(at("2026-11-18T00:00"), True)
