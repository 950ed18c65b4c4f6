"""Reading refund-request fields from what customers write, in English and Chinese.

Pure functions over text: `now` and the time zone are arguments, nothing reads the clock,
the disk or the network. The readers never invent a value: when the text does not make a
field certain (two amounts and nothing says which was charged) they return None and the
dialog asks. A labelled line ("Amount: $12.50", "金额：100元") wins over free text.

Every reader first prepares the text the same way:
  1. normalised (policy/text.py): full-width forms folded, whitespace runs collapsed, capped;
  2. quoted earlier letters are cut ("> ..." lines, "On ... wrote:", "在 ... 写道：", "发件人:");
  3. distractors are blanked with spaces: order and request IDs, phone numbers, e-mail
     addresses, versions, error codes, model names, token and call counts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal

import re2

from .extract_money import Money, choose_amount, find_amounts, to_decimal
from .extract_time import (
    Moment,
    choose_moment,
    cn_number,
    find_moments,
    find_outage_hours,
    find_time_spans,
    local_now,
    parse_answer_moment,
)
from .text import OWN_WORDS_LIMIT, normalize

__all__ = [
    "Money",
    "Moment",
    "FIELD_NAMES",
    "read_money",
    "read_moment",
    "read_account_id",
    "read_percent",
    "read_hours",
    "read_labelled",
    "read_fields",
    "detect_language",
    "read_purchase_moment",
    "read_case_ref",
    "strip_quoted",
    "mask_distractors",
    "read_all",
    "FieldReading",
]

FIELD_NAMES = frozenset(
    {
        "amount",
        "currency",
        "incident_at",
        "incident_date_only",
        "account_id",
        "purchase_at",
        "quota_used_pct",
        "outage_hours",
        "case_ref",
        "description",
    }
)

# ---------------------------------------------------------------- preparing the text

# Where a quoted earlier letter starts, in the wordings of Gmail, Outlook, Apple Mail, QQ Mail,
# NetEase and Foxmail (intake/email/quoting.py knows the same ones; policy/ may not import it).
# It is searched for in the whole text, before the cap, so it runs on RE2 (linear by
# construction; 7 ms against Python's 132 ms on a megabyte of short lines, the same matches on
# the evaluation sets).
_REPLY_HEADER = re2.compile(
    "(?im)"
    r"^[ \t]*On\b[^\n]{0,300}?(?:\n[^\n]{0,300}?)?\bwrote:[ \t]*$"
    r"|^[ \t]*-{2,}[ \t]*(?:Original Message|Forwarded message|Reply Message|Replied Message|"
    r"原始邮件|原始郵件|回复的原邮件|转发的邮件|原邮件)[ \t]*-{2,}"
    r"|^[ \t]*在[^\n]{0,200}写道[:：]?[ \t]*$"
    r"|^[^\n]{2,120}于[^\n]{2,80}写道[:：][ \t]*$"
    r"|^[ \t]*(?:发件人|發件人|寄件者)[:：]"
    r"|^[ \t]*From:[^\n]*\n(?:[^\n]*\n){0,3}?[ \t]*(?:Sent|Date|To|Subject):"
    r"|^[ \t]*_{10,}[ \t]*$"
    r"|^(?:--|——)[ ]?$"
    r"|^[ \t]*(?:Sent from my|发自我的|从我的 ?i)"
)


def _normalize(text: str) -> str:
    return normalize(text)


def strip_quoted(text: str) -> str:
    """The customer's own words: no quoted earlier letter, no signature below '-- '."""
    text = _normalize(text)
    header = _REPLY_HEADER.search(text)
    if header:
        text = text[: header.start()]
    own = "\n".join(line for line in text.split("\n") if not line.lstrip().startswith(">"))
    return own[:OWN_WORDS_LIMIT]


def _quoted_part(text: str) -> str:
    text = _normalize(text)
    header = _REPLY_HEADER.search(text)
    quoted = [line for line in text.split("\n") if line.lstrip().startswith(">")]
    return (text[header.start() :] if header else "") + "\n" + "\n".join(quoted)


_CURRENCY_AHEAD = r"(?![A-Za-z0-9_-])(?!\s*(?:元|块|美元|美金|刀|usd|rmb|cny|dollars?|yuan|eur|€|\$))"
_DISTRACTORS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"https?://\S+|www\.\S+",
        r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}",
        # Model names carry digits: gpt-4o-mini, claude-3.5-sonnet, Claude 3.5, qwen2.5-72b, o1-preview.
        r"(?<![A-Za-z0-9])(?:chatgpt|gpt|claude|gemini|llama|qwen|deepseek|chatglm|glm|mistral|mixtral|"
        r"ernie|doubao|kimi|moonshot|baichuan|o[134]|dall-e|whisper|text-embedding|midjourney|sdxl|"
        r"stable-diffusion|flux|sora|grok|command-r)(?:[-_.]?(?:[0-9]+(?:\.[0-9]+)*[a-z]*|v[0-9]+(?:\.[0-9]+)*"
        r"|[a-z]+[0-9]*)|\s(?:[0-9]+\.[0-9]+[a-z]*|[0-9]+[a-z]+\b|v[0-9]+|sonnet|opus|haiku|mini|turbo|"
        r"pro|flash))*",
        r"\bv[0-9]+(?:\.[0-9]+)*\b",
        r"(?:\bversion|\bver\.|\bsdk|\bpython|\bnode(?:\.?js)?|版本号?)\s*v?(?P<x>[0-9]+(?:\.[0-9]+)*)",
        r"(?:\bhttp|\bstatus(?:\s*code)?|\berror(?:\s*code)?|\berr|\bcode|错误码|错误代码|错误|返回码|状态码|"
        r"报错|返回了?)\s*[:：#]?\s*(?P<x>[0-9]{3,6})(?![0-9年月日号元块.])",
        r"(?<![0-9.])(?P<x>[1-5][0-9]{2}s?)(?![0-9.])(?=\s*(?:errors?|bad gateway|too many|internal|"
        r"service unavailable|gateway|not found|forbidden|unauthorized|timeout|错误|报错)|s\b)",
        # An ID after the word that names it: Order #2026..., 订单号 2026..., request id 3f9a0c.
        r"(?:order|订单|invoice|发票|transaction|txn|trace|request|req|ticket|工单|流水|session|请求|"
        r"(?:payment|支付|交易|receipt|reference|ref|message|msg)[\s_-]*(?:id|no\.?|number|#|号|编号))"
        r"[\s_-]*(?:id|no\.?|number|num|#|号|编号|单号|号码)?\s*[:：#=]?\s*"
        rf"(?P<x>(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{{4,}}){_CURRENCY_AHEAD}",
        r"(?<![0-9])[0-9]{9,}(?![0-9])",
        r"(?<![A-Za-z0-9$])(?!(?:utc|gmt)[+-][0-9])[A-Za-z]+[-_][A-Za-z0-9_-]*[0-9][A-Za-z0-9_-]*",
        # Phone numbers: +86 138 0013 8000, 138-0013-8000, 415-555-0134, 0755-86001234.
        r"\+[0-9]{1,3}[\s-]?\(?[0-9]{1,4}\)?(?:[\s-]?[0-9]{2,4}){2,4}",
        r"(?<![0-9])1[3-9][0-9][\s-]?[0-9]{4}[\s-]?[0-9]{4}(?![0-9])",
        r"(?<![0-9.])\(?[0-9]{3}\)?[\s.-][0-9]{3}[\s.-][0-9]{4}(?![0-9])",
        r"(?<![0-9])0[0-9]{2,3}-[0-9]{7,8}(?![0-9])",
        r"(?:\btel|\bphone|\bmobile|\bcell|电话|手机|联系方式|微信|wechat|\bqq)\s*(?:number|no\.?|号码?)?\s*[:：]?"
        r"\s*(?P<x>\+?[0-9][0-9\s()-]{5,}[0-9])",
        r"(?:ending(?:\s+in)?|尾号|末四位|last\s*(?:4|four)(?:\s*digits)?)\s*(?P<x>[0-9]{4})",
        # Counts: 1,200,000 tokens, 1.5M tokens, 120万tokens, 2,300 calls, 3 times, 5次.
        # ("¥128 token pack" is a price, "June 5  Token pack" a date beside a product's name)
        r"(?P<x>(?<![0-9.,$¥￥€£])[0-9][0-9,]*(?:\.[0-9]+)?\s*(?:[kmb万亿千](?![a-z])|million|thousand|billion)?)"
        r"\s*(?:个)?\s*(?:tokens?(?!\s{0,2}(?:packs?|packages?|bundles?|plans?))|tok\b|字符|字|characters?|chars?|calls?|requests?|reqs?|次调用|次请求|次|条|"
        r"images?|张|queries|rpm|tpm|qps|mb|gb|kb|ms|秒|seconds?|secs?|words?|lines?|messages?|times?)(?![a-z])",
    )
]
_DOTTED_DATE = re.compile(
    r"(?:19|20)[0-9]{2}\.[0-9]{1,2}\.[0-9]{1,2}"
    r"|[0-9]{1,2}\.[0-9]{1,2}\.(?:19|20)[0-9]{2}"
)
_THREE_PART_NUMBER = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){2,}(?![0-9])")  # versions, IPs


def _blank(text: str, spans) -> str:
    chars = list(text)
    for start, end in spans:
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


@functools.lru_cache(maxsize=64)
def mask_distractors(text: str) -> str:
    """Blank what only looks like an amount or a date; positions stay the same.

    Cached: a mail's own words are masked for the money reader and again for the labelled
    lines (read_labelled of the text without its quote), and each pass of the eighteen
    patterns was a quarter of reading a mail's fields."""
    spans = []
    for pattern in _DISTRACTORS:
        for m in pattern.finditer(text):
            spans.append(m.span("x") if "x" in pattern.groupindex and m.group("x") else m.span())
    spans += [m.span() for m in _THREE_PART_NUMBER.finditer(text) if not _DOTTED_DATE.fullmatch(m.group())]
    return _blank(text, spans)


# ---------------------------------------------------------------- labelled lines

_LABELS = {
    "amount": [
        "amount",
        "refund amount",
        "requested amount",
        "amount requested",
        "amount charged",
        "charged amount",
        "charge amount",
        "amount to refund",
        "金额",
        "退款金额",
        "申请退款金额",
        "申请金额",
        "扣费金额",
        "异常扣费金额",
        "异常消费金额",
        "扣款金额",
        "异常扣款金额",
        "消费金额",
    ],
    "currency": ["currency", "币种", "货币"],
    "incident_at": [
        "time of the charge",
        "time of charge",
        "charge time",
        "time of the incident",
        "time of incident",
        "incident time",
        "date of charge",
        "date of the charge",
        "charge date",
        "incident date",
        "date and time",
        "when",
        "time",
        "date",
        "异常扣费时间",
        "扣费时间",
        "异常消费时间",
        "异常扣款时间",
        "扣款时间",
        "发生时间",
        "问题发生时间",
        "故障时间",
        "故障发生时间",
        "异常时间",
        "时间",
        "日期",
    ],
    "purchase_at": [
        "purchase date",
        "date of purchase",
        "purchased on",
        "purchase time",
        "order date",
        "购买日期",
        "购买时间",
        "下单时间",
        "订购时间",
        "充值时间",
    ],
    "account_id": [
        "account id",
        "account",
        "account name",
        "account email",
        "account e-mail",
        "user id",
        "userid",
        "user",
        "username",
        "user name",
        "uid",
        "login",
        "login id",
        "acct",
        "acct id",
        "账号",
        "账户",
        "帐号",
        "帐户",
        "账号id",
        "账户id",
        "账号 id",
        "账户 id",
        "用户id",
        "用户 id",
        "用户名",
        "登录账号",
        "注册邮箱",
        "登录邮箱",
        "会员id",
    ],
    "description": [
        "description",
        "problem description",
        "issue description",
        "issue",
        "problem",
        "details",
        "问题描述",
        "描述",
        "情况说明",
        "详细说明",
        "问题说明",
        "具体情况",
        "详情",
    ],
    "reason": ["reason", "refund reason", "原因", "退款原因", "申请原因"],
    "quota_used_pct": [
        "quota used",
        "usage",
        "percent used",
        "已用额度",
        "额度使用",
        "使用比例",
        "已使用",
        "用量",
        "已用",
    ],
    "outage_hours": [
        "outage duration",
        "downtime",
        "outage",
        "duration",
        "故障时长",
        "中断时长",
        "宕机时长",
        "不可用时长",
    ],
    "case_ref": [
        "case",
        "case id",
        "case number",
        "case ref",
        "reference",
        "ticket",
        "工单号",
        "工单",
        "案件号",
        "申请编号",
        "编号",
    ],
}
_LABEL_FIELD = {label: field for field, labels in _LABELS.items() for label in labels}
_LABEL = re.compile(
    r"(?:^|(?<=[\s,，;；。(（【\[|*的]))[*_]*(?P<label>"
    + "|".join(re.escape(lb).replace(r"\ ", r"\s*") for lb in sorted(_LABEL_FIELD, key=len, reverse=True))
    + r")[*_]*\s*[:：]",
    re.IGNORECASE | re.MULTILINE,
)
_FREE_FORM = ("description", "reason")  # these run on; the others end at a sentence's end
_VALUE_END = re.compile(r"[。！？；;!?，]|\.(?=\s|$)|(?<=[^\s(（])[)）]")  # "账户（账号ID：900123）在...": stop at "）"


@dataclass(frozen=True)
class _LabelHit:
    field: str
    start: int  # where the label starts
    end: int  # where its value ends
    value: str


def _label_hits(body: str) -> list[_LabelHit]:
    matches = list(_LABEL.finditer(body))
    hits = []
    # Each label with the next one (None after the last); with no label at all, zip stops at once.
    for m, following in zip(matches, [*matches[1:], None], strict=False):
        field = _LABEL_FIELD[re.sub(r"\s+", " ", m.group("label").lower())]
        line_end = body.find("\n", m.end())
        line_end = len(body) if line_end < 0 else line_end
        end = min(line_end, following.start() if following else len(body))
        value = body[m.end() : end]
        if field not in _FREE_FORM:
            value = _VALUE_END.split(value)[0]  # "Account: u_1. I was charged $5": stop at the "."
            end = m.end() + len(value)
        elif not value.strip():
            value, end = _continuation(body, line_end)
        value = value.strip().strip("*_\"'“”‘’()（）[]【】").strip()
        hits.append(_LabelHit(field, m.start(), end, value))
    return hits


def _continuation(body: str, line_end: int) -> tuple[str, int]:
    """A label alone on its line ("问题描述：") is followed by its text, up to a blank line."""
    lines, pos = [], line_end + 1
    for line in body[line_end + 1 :].split("\n"):
        if not line.strip() or _LABEL.match(line.strip()):
            break
        lines.append(line)
        pos += len(line) + 1
    return "\n".join(lines), min(pos, len(body))


def read_labelled(text: str) -> dict[str, str]:
    """Labelled values ("Amount: ...", "异常扣费时间：...") by canonical field name, raw.

    Besides the documented field names this may return "reason". The first non-empty value
    of a field wins; labels inside quoted earlier letters are ignored."""
    return dict(_prepare(text).labels)  # a copy: the prepared text is shared (cached)


# Where a signature starts: a closing alone on its line ("Best regards", "Thanks, Anna", "此致").
# What follows (titles, addresses, phones, "Founded 01.04.2009", office hours) is not the claim;
# labelled lines below it ("Account ID: ...") are still read as labels.
_CLOSING = re.compile(
    r"^[ \t]{0,8}(?:(?:with\s)?(?:best|kind|warm|warmest|many)\s(?:regards|wishes|wish|thanks)|regards|best|"
    r"thanks(?:\sand\sregards|\sa\s(?:lot|bunch|ton))?|thank\syou(?:\svery\smuch)?|many\sthanks|cheers|"
    r"(?:yours\s)?(?:sincerely|faithfully|truly)|respectfully|best\swish(?:es)?|viele\sgrüße|"
    r"此致|顺颂商祺|顺祝商祺|祝好|敬礼|谢谢|感谢)"
    r"[ \t]{0,4}[,，.!！。]{0,3}(?:[ \t]{0,4}[A-Za-z\u4e00-\u9fff][^\n0-9,.:：]{0,40})?[ \t]{0,8}$"
    r"|^[ \t]{0,8}(?:—|——|-{3,})[ \t—-]{0,40}(?:[A-Za-z\u4e00-\u9fff][^\n0-9]{0,40})?$",
    re.MULTILINE | re.IGNORECASE,
)


def _without_signature(free: str) -> str:
    """The text above the first closing line that has the customer's words above it."""
    for m in _CLOSING.finditer(free):
        if free[: m.start()].strip():
            return free[: m.start()]
    return free


@dataclass(frozen=True)
class _Prepared:
    labels: dict[str, str]  # canonical field -> first non-empty labelled value
    free: str  # own words, distractors blanked, and the structured labelled values too


# One message is read field by field (amount, moment, account, percent, ...), and each reader
# starts here: cached, the text is stripped, labelled and masked once, not nine times.
@functools.lru_cache(maxsize=64)
def _prepare(text: str) -> _Prepared:
    body = strip_quoted(text)
    hits = _label_hits(body)
    labels: dict[str, str] = {}
    for hit in hits:
        if hit.value and hit.field not in labels:
            labels[hit.field] = hit.value
    # A labelled value is read from its label; free-text readers must not count it again.
    # Descriptions stay: "Description: charged $12.50 twice yesterday" is free text.
    structured = [(h.start, h.end) for h in hits if h.field not in _FREE_FORM]
    return _Prepared(labels, _without_signature(_blank(mask_distractors(body), structured)))


# ---------------------------------------------------------------- money and moments


def _money_text(text: str) -> str:
    return _blank(text, find_time_spans(text))


def _money_in(text: str, *, answer: bool) -> Money | None:
    masked = _money_text(mask_distractors(text))
    return choose_amount(find_amounts(masked, answer=answer), masked)


def read_money(text: str, *, answer: bool = False) -> Money | None:
    """The amount the customer asks about; a bare number only in an answer or after 'charged'."""
    prepared = _prepare(text)
    if "amount" in prepared.labels:
        money = _money_in(prepared.labels["amount"], answer=True)
        if money is not None:
            if money.currency is None and "currency" in prepared.labels:
                named = _money_in("1 " + prepared.labels["currency"], answer=True)
                money = Money(money.amount, named.currency if named else None)
            return money
    free = _money_text(prepared.free)
    money = choose_amount(find_amounts(free, answer=answer), free)
    if money is None and not answer:
        money = _money_in_pointed_row(text, free)
    return money


def _money_in_pointed_row(text: str, free: str) -> Money | None:
    """ "第三行那笔是盗刷，请退": the amount of the table row the customer points at."""
    rows = _table_rows(strip_quoted(text), len(free))
    data_rows = [i for i, (start, end) in enumerate(rows) if find_amounts(free[start:end], answer=True)]
    row = _pointed_row(free, rows, data_rows) if data_rows else None
    if row is None:
        return None
    amounts = {m.money for m in find_amounts(free[rows[row][0] : rows[row][1]])}
    return amounts.pop() if len(amounts) == 1 else None


def read_moment(text: str, now: datetime, tz: tzinfo, *, answer: bool = False) -> Moment | None:
    """When the abnormal charge or incident happened; never a moment in the future."""
    prepared = _prepare(text)
    labelled = None
    if "incident_at" in prepared.labels:
        labelled = parse_answer_moment(mask_distractors(prepared.labels["incident_at"]), now, tz)
        if labelled is not None and not _letter_date(labelled, now, tz):
            return labelled
    if answer:
        return labelled or parse_answer_moment(prepared.free, now, tz)
    mentions = find_moments(prepared.free, now, tz)
    rows = _table_rows(strip_quoted(text), len(prepared.free))
    if rows and any(_row_of(m.start, rows) is not None for m in mentions):
        return _moment_from_table(text, prepared.free, mentions, rows) or labelled
    return choose_moment(mentions) or labelled


def _letter_date(moment: Moment, now: datetime, tz: tzinfo) -> bool:
    """ "日期：2026年6月10日" under a formal letter sent that day dates the letter: the words
    above it say when the charge was, and only when they do not is the label taken."""
    return moment.date_only and moment.at.date() == local_now(now, tz).date()


# ---------------------------------------------------------------- tables of charges

# A row of a pasted table: its cells are set apart by runs of spaces, tabs or bars.
_CELL_GAP = re.compile(r" {2,40}|\t|\|")
_TOTAL_ROW = re.compile(r"\b(?:total|sum|subtotal|balance)\b|合计|总计|一共|总额|余额", re.IGNORECASE)
_CLOCK_ONLY = re.compile(r"[(（]?[0-9]{1,2}[:.][0-9]{2}[)）]?")
_EN_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "1st": 1, "2nd": 2, "3rd": 3}
# "第三行那笔是盗刷", "the second row": the customer points at one row of the table
_ROW_POINTER = re.compile(
    r"第\s{0,2}([0-9]{1,2}|[一二三四五六七八九十]{1,3})\s{0,2}(?:行|笔|条|项)"
    r"|\b(?:the\s)?(first|second|third|fourth|fifth|1st|2nd|3rd)\s(?:row|line|entry)\b"
    r"|\b(?:row|line)\s{1,2}(?:#\s{0,2})?([0-9]{1,2})\b",
    re.IGNORECASE,
)


def _table_rows(body: str, length: int) -> list[tuple[int, int]]:
    """Where the lines of a pasted table are (not its totals), as spans of the prepared text."""
    rows, pos = [], 0
    for line in body.split("\n"):
        if pos >= length:
            break
        if len(_CELL_GAP.findall(line.strip())) >= 2 and not _TOTAL_ROW.search(line):
            rows.append((pos, min(pos + len(line), length)))
        pos += len(line) + 1
    return rows


def _row_of(position: int, rows: list[tuple[int, int]]) -> int | None:
    return next((i for i, (start, end) in enumerate(rows) if start <= position < end), None)


def _pointed_row(free: str, rows: list[tuple[int, int]], data_rows: list[int]) -> int | None:
    """The table row the customer's words point at by its place ("第三行", "the second row")."""
    pointers = set()
    for m in _ROW_POINTER.finditer(free):
        if _row_of(m.start(), rows) is not None:
            continue
        word = m.group(1) or m.group(2) or m.group(3)
        place = _EN_ORDINALS.get(word.lower()) or cn_number(word)
        if place and place <= len(data_rows):
            pointers.add(data_rows[place - 1])
    return pointers.pop() if len(pointers) == 1 else None


def _moment_from_table(text: str, free: str, mentions: list, rows: list[tuple[int, int]]) -> Moment | None:
    """A table of charges names many dates: the customer's own sentence says which one, by a
    date of its own, by the time of the row ("the second charge (09:03)"), by its place, or by
    the amount claimed, which sits in one row."""
    prose = [m for m in mentions if _row_of(m.start, rows) is None]
    dated = [m for m in prose if not _CLOCK_ONLY.fullmatch(free[m.start : m.end].strip())]
    moment = choose_moment(dated)
    if moment is not None and moment.date_only:
        # "6月18日上午有两笔完全一样的": the rows of that day tell the time, if they agree on one
        timed = {
            m.moment
            for m in mentions
            if _row_of(m.start, rows) is not None
            and m.role == "incident"
            and not m.moment.date_only
            and m.moment.at.date() == moment.at.date()
        }
        return timed.pop() if len(timed) == 1 else moment
    if moment is not None or dated:
        return moment
    by_row: dict[int, list] = {}
    for m in mentions:
        row = _row_of(m.start, rows)
        if row is not None:
            by_row.setdefault(row, []).append(m)
    clocks = {m.moment.at.timetz().replace(tzinfo=None) for m in prose}
    picked = {
        row
        for row, found in by_row.items()
        if any(m.moment.at.timetz().replace(tzinfo=None) in clocks and not m.moment.date_only for m in found)
    }
    if not picked:
        pointed = _pointed_row(free, rows, sorted(by_row))
        picked = {pointed} if pointed is not None else set()
    if not picked:
        money = read_money(text)
        if money is not None:
            masked = _money_text(free)
            picked = {
                row
                for row in by_row
                if any(
                    a.money.amount == money.amount
                    for a in find_amounts(masked[rows[row][0] : rows[row][1]], answer=True)
                )
            }
    if len(picked) == 1:
        return choose_moment(by_row[picked.pop()])
    return choose_moment(mentions)


def read_purchase_moment(text: str, now: datetime, tz: tzinfo) -> Moment | None:
    prepared = _prepare(text)
    if "purchase_at" in prepared.labels:
        moment = parse_answer_moment(mask_distractors(prepared.labels["purchase_at"]), now, tz)
        if moment is not None:
            return moment
    return choose_moment(find_moments(prepared.free, now, tz), role="purchase")


# ---------------------------------------------------------------- account, percent, hours, case

_ID = r"[A-Za-z0-9][A-Za-z0-9_.@+-]*[A-Za-z0-9]|[A-Za-z0-9]"
_ACCOUNT = re.compile(
    r"(?P<kw>\b(?:account\s*(?:id|name|e-?mail|number|no\.?)|account|acct(?:\s*id)?|user\s*id|"
    r"user\s*name|username|user|login(?:\s*id)?|uid)\b|登录账号|注册邮箱|账号|账户|帐号|帐户|用户名|用户\s*id)"
    r"\s*(?:\(\s*)?(?:id\b\s*)?(?P<sep>(?:#|no\.?)?\s*[:：=]|#|\bis\b|是|为)?\s*['\"“‘(]?\s*"
    r"(?:[\u4e00-\u9fff]{1,12}\s*[(（]\s*)?(?P<id>" + _ID + ")",  # "用户名：青蛙王子 (frog_king_88)"
    re.IGNORECASE,
)
_BARE_ID_LABEL = re.compile(r"(?<![A-Za-z0-9_])id(?P<sep>\s*[:：])?\s*(?P<id>" + _ID + ")", re.IGNORECASE)
_NOT_ACCOUNT_ID_OWNERS = {
    "request",
    "req",
    "trace",
    "order",
    "transaction",
    "session",
    "message",
    "payment",
    "invoice",
    "ticket",
    "case",
    "task",
    "job",
    "batch",
    "key",
    "请求",
    "订单",
    "交易",
    "流水",
    "工单",
    "任务",
    "支付",
    "会话",
    "消息",
}


def _looks_like_id(token: str) -> bool:
    return bool(re.search(r"[0-9_@.\-]", token))


def _account_candidates(body: str) -> list[str]:
    found = []
    for m in _ACCOUNT.finditer(body):
        explicit = m.group("sep") or not m.group("kw").isascii()
        if explicit or _looks_like_id(m.group("id")):
            found.append(m.group("id").rstrip("."))
    for m in _BARE_ID_LABEL.finditer(body):
        # "request id 3f9a", "trace_id", "请求ID 2026..." name something else's ID
        before = re.search(r"([A-Za-z]+|请求|订单|交易|流水|工单|任务|支付|会话|消息)[\s_-]*$", body[: m.start()])
        owner = before.group(1).lower() if before else ""
        if owner not in _NOT_ACCOUNT_ID_OWNERS and (m.group("sep") or re.search("[0-9]", m.group("id"))):
            found.append(m.group("id").rstrip("."))
    return found


def read_account_id(text: str, *, answer: bool = False) -> str | None:
    """The account the customer names ("acct u_88213", "账号：13800138000"); None if unsure."""
    body = strip_quoted(text)
    labelled = read_labelled(body).get("account_id")
    if labelled:
        # "用户名：青蛙王子 (frog_king_88)": a nickname may come first; the ID is the Latin token.
        tokens = [t for t in re.findall(_ID, labelled) if len(t) >= 2 or t.isdigit()]
        if tokens:
            return tokens[0].rstrip(".")
    candidates = set(_account_candidates(body))
    if len(candidates) == 1:
        return candidates.pop()
    if answer and not candidates and not _PHONE_WORD.search(body):
        tokens = re.findall(_ID, body)
        if len(tokens) == 1 and 2 <= len(tokens[0]) <= 64:
            return tokens[0].rstrip(".")
    return None


_PHONE_WORD = re.compile(r"\b(?:tel|phone|mobile|cell)\b|电话|手机", re.IGNORECASE)


_PERCENT = re.compile(
    r"(?<![0-9.])(?P<num>[0-9]{1,3}(?:\.[0-9]+)?)\s*(?:%|percent\b|per cent\b)"
    r"|百分之\s*(?P<cn>[0-9]{1,3}(?:\.[0-9]+)?|[零一二两三四五六七八九十百]{1,4})",
    re.IGNORECASE,
)
_QUOTA_WORDS = re.compile(
    r"\b(?:quota|usage|used|use|using|consumed|credits?|allowance|plan|limit)\b"
    r"|额度|用了|已用|使用|用量|消耗|配额|套餐|流量",
    re.IGNORECASE,
)
_NOT_QUOTA_WORDS = re.compile(
    r"\b(?:sla|uptime|availability|available|discount|off|success|error rate|"
    r"failure|increase|growth|faster|slower|accuracy|tax|fee|refund)\b|可用|折|"
    r"成功率|失败率|涨|准确|税|手续费|退",
    re.IGNORECASE,
)
_UNUSED = re.compile(
    r"\b(?:haven'?t|have not|never|did not|didn'?t) (?:even )?used? (?:it|them|any)\b"
    r"|\bnot used (?:it )?at all\b|没用过|没有用过|未使用过|一次都没(?:有)?用|还没(?:有)?用过|"
    r"完全没(?:有)?用",
    re.IGNORECASE,
)
_SENTENCES = re.compile(r"[。！？；;!?\n]|\.(?=\s|$)")


def read_percent(text: str, *, answer: bool = False) -> Decimal | None:
    """Share of the quota used ("used 30% of my quota", "已用 30%"); SLA figures are not quota."""
    prepared = _prepare(text)
    if "quota_used_pct" in prepared.labels:
        return read_percent(prepared.labels["quota_used_pct"], answer=True)
    found = set()
    for sentence in _SENTENCES.split(prepared.free):
        for m in _PERCENT.finditer(sentence):
            near = sentence[max(0, m.start() - 12) : m.end() + 12]
            if _NOT_QUOTA_WORDS.search(near) or not (answer or _QUOTA_WORDS.search(sentence)):
                continue
            value = to_decimal(m.group("num")) if m.group("num") else _cn_decimal(m.group("cn"))
            if value is not None and value <= 100:
                found.add(value)
        if _UNUSED.search(sentence):
            found.add(Decimal(0))
    if answer and not found:
        found = _answer_percent(prepared.free)
    return found.pop() if len(found) == 1 else None


def _cn_decimal(text: str) -> Decimal | None:
    if re.fullmatch(r"[0-9.]+", text):
        return to_decimal(text)
    value = cn_number(text)
    return None if value is None else Decimal(value)


def _answer_percent(answer: str) -> set[Decimal]:
    if re.fullmatch(r"\s*(?:about|around|roughly|大概|大约|约)?\s*(?:half|一半)\s*[.。]?\s*", answer, re.IGNORECASE):
        return {Decimal(50)}
    number = _bare_number(answer)
    return {number} if number is not None and number <= 100 else set()


_BARE_NUMBER = re.compile(
    r"(?:(?:about|around|approx\.?|roughly|大概|大约|约)\s{0,3})?"
    r"([0-9]{1,4}(?:\.[0-9]{1,8})?)\s{0,3}[.。]?",
    re.IGNORECASE,
)


def _bare_number(answer: str) -> Decimal | None:
    """An answer that is only a number ("36", "about 30"): its unit is the question's."""
    m = _BARE_NUMBER.fullmatch(answer.strip())
    return Decimal(m.group(1)) if m else None


def read_hours(text: str, *, answer: bool = False) -> Decimal | None:
    """How long the outage lasted, in hours: "down for 2 days" -> 48, "36小时" -> 36."""
    prepared = _prepare(text)
    if "outage_hours" in prepared.labels:
        return read_hours(prepared.labels["outage_hours"], answer=True)
    found = set(find_outage_hours(prepared.free, answer=answer))
    if answer and not found and (bare := _bare_number(prepared.free)) is not None:
        found = {bare}
    return found.pop() if len(found) == 1 else None


_CASE_REF = re.compile(r"(?<![A-Za-z0-9])(RF|AP)-?([0-9]{6})(?![0-9])", re.IGNORECASE)


def read_case_ref(text: str) -> str | None:
    """A case ID (RF-000123, AP-000045) the text names; the customer's own words first."""
    for part in (strip_quoted(text), _quoted_part(text)):
        refs = {f"{m.group(1).upper()}-{m.group(2)}" for m in _CASE_REF.finditer(part)}
        if refs:
            return refs.pop() if len(refs) == 1 else None
    return None


# ---------------------------------------------------------------- all fields, language


def _plain(number: Decimal) -> str:
    return format(number, "f")


@dataclass(frozen=True)
class FieldReading:
    """Every field the text makes certain (read_fields), and where the reader chose between
    several values of the customer's free text, all of them, the chosen one first: amounts as
    plain decimals, moments in ISO form (a date only as its date)."""

    fields: dict[str, str]
    candidates: dict[str, tuple[str, ...]]


def read_all(text: str, now: datetime, tz: tzinfo) -> FieldReading:
    fields = read_fields(text, now, tz)
    prepared = _prepare(text)
    candidates: dict[str, tuple[str, ...]] = {}
    if "amount" in fields and "amount" not in prepared.labels:
        chosen = Decimal(fields["amount"])
        others = {m.money.amount for m in find_amounts(_money_text(prepared.free))} - {chosen}
        if others:
            candidates["amount"] = (fields["amount"], *(_plain(a) for a in sorted(others)))
    if "incident_at" in fields and "incident_at" not in prepared.labels:
        chosen_at = datetime.fromisoformat(fields["incident_at"])
        # A purchase date is its own field, and a date-only mention of the chosen day agrees with it.
        others_at = {
            m.moment
            for m in find_moments(prepared.free, now, tz)
            if m.role != "purchase"
            and m.moment.at != chosen_at
            and not (m.moment.date_only and m.moment.at.date() == chosen_at.date())
        }
        if others_at:
            shown = sorted({m.at.date().isoformat() if m.date_only else m.at.isoformat() for m in others_at})
            candidates["incident_at"] = (fields["incident_at"], *shown)
    return FieldReading(fields, candidates)


def _named_currency(text: str, money: Money | None) -> str | None:
    """The currency of the mail when the chosen amount names none, or no amount was chosen:
    that of the same amount written elsewhere ("¥927.50 ... 请退这927.5"), else the one currency
    every amount of the mail is written in ("$30 and $45, one of them is wrong")."""
    free = _money_text(_prepare(text).free)
    mentions = [m for m in find_amounts(free) if m.money.currency]
    same = {m.money.currency for m in mentions if money is not None and m.money.amount == money.amount}
    named = same or {m.money.currency for m in mentions}
    return named.pop() if len(named) == 1 else None


_FORWARD_MARKER = re.compile(
    r"^[ \t]{0,8}(?:-{2,40}[ \t]{0,4}(?:Forwarded message|Original Message|转发的邮件|转发邮件信息|转发邮件|"
    r"原始邮件|轉寄郵件)[ \t]{0,4}-{2,40}|Begin forwarded message[ \t]{0,4}:)[ \t]{0,8}$",
    re.MULTILINE | re.IGNORECASE,
)
_FORWARD_HEADER = re.compile(
    r"[ \t]{0,8}\*?(?P<name>from|date|sent|to|cc|subject|发件人|寄件者|发送时间|发送日期|时间|日期|收件人|抄送|主题)"
    r"\*?[ \t]{0,4}[:：](?P<value>[^\n]{0,400})",
    re.IGNORECASE,
)
# A forward from these is a receipt, a bill or a notice: its totals are not the claim (SPEC).
_MACHINE_SENDER = re.compile(
    r"no-?reply|do-?not-?reply|billing|invoice|receipt|notif|notice|alert|"
    r"service|system|mailer|bank|账单|通知|银行|客服",
    re.IGNORECASE,
)
_FORWARD_FIELDS = ("amount", "currency", "incident_at", "incident_date_only")


def _forwarded_request(text: str) -> str | None:
    """The body of a letter the customer forwarded (their own earlier request, a colleague's
    note), without its header lines; None when there is none or it comes from a machine."""
    marker = _FORWARD_MARKER.search(text)
    if marker is None:
        return None
    lines = text[marker.end() :].split("\n")
    sender, body_start = "", len(lines)
    for index, line in enumerate(lines):
        header = _FORWARD_HEADER.fullmatch(line)
        if header:
            sender = header.group("value") if header.group("name").lower() in ("from", "发件人", "寄件者") else sender
        elif line.strip():
            body_start = index
            break
    if not sender or _MACHINE_SENDER.search(sender):
        return None
    return "\n".join(lines[body_start:])


def read_fields(text: str, now: datetime, tz: tzinfo) -> dict[str, str]:
    """Every field the text makes certain, as strings (see FIELD_NAMES); absent otherwise.

    A letter forwarded below the customer's words fills the amount and the date they leave empty."""
    fields = _read_own_fields(text, now, tz)
    forwarded = _forwarded_request(text)
    if forwarded:
        earlier = _read_own_fields(forwarded, now, tz)
        if "amount" not in fields and "currency" not in fields:
            fields.update({k: earlier[k] for k in ("amount", "currency") if k in earlier})
        if "incident_at" not in fields:
            fields.update({k: earlier[k] for k in ("incident_at", "incident_date_only") if k in earlier})
    return fields


def _read_own_fields(text: str, now: datetime, tz: tzinfo) -> dict[str, str]:
    fields: dict[str, str] = {}
    money = read_money(text)
    if money is not None:
        fields["amount"] = _plain(money.amount)
    currency = money.currency if money is not None and money.currency else _named_currency(text, money)
    if currency:
        fields["currency"] = currency
    moment = read_moment(text, now, tz)
    if moment is not None:
        fields["incident_at"] = moment.at.isoformat()
        if moment.date_only:
            fields["incident_date_only"] = "1"
    purchase = read_purchase_moment(text, now, tz)
    if purchase is not None:
        fields["purchase_at"] = purchase.at.isoformat()
    optional = {
        "account_id": read_account_id(text),
        "case_ref": read_case_ref(text),
        "description": read_labelled(text).get("description"),
    }
    percent, hours = read_percent(text), read_hours(text)
    optional["quota_used_pct"] = None if percent is None else _plain(percent)
    optional["outage_hours"] = None if hours is None else _plain(hours)
    fields.update({name: value for name, value in optional.items() if value})
    return fields


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def detect_language(text: str) -> str:
    """'zh' when the customer's own words are mostly Chinese, else 'en'.

    A Chinese word is about two characters, so two Han characters weigh one Latin word."""
    own = strip_quoted(text)
    sample = own if own.strip() else _normalize(text)
    han, latin = len(_HAN.findall(sample)), len(_LATIN_WORD.findall(sample))
    return "zh" if han >= 2 and han >= 2 * latin else "en"
