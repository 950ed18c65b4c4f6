"""Amounts of money named in English and Chinese free text.

Like extract_time, this reads text that `extract.py` has already cleaned (quotes cut,
distractors and dates blanked). Every amount is found with the words around it: was it
charged, asked back, a total, a balance, a plan's price? `choose_amount` then takes the one
amount the text makes certain, and returns None when two amounts compete: the dialog asks.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from price_parser import Price

from .extract_time import cn_number


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str | None  # ISO 4217 code; None when the text names none


@dataclass(frozen=True)
class AmountMention:
    start: int
    end: int
    money: Money
    roles: frozenset[str]


# Longest spellings first, so "US$" wins over "$" and "美元" over "元".
CURRENCY_WORDS = {
    "us$": "USD",
    "usd": "USD",
    "us dollars": "USD",
    "us dollar": "USD",
    "dollars": "USD",
    "dollar": "USD",
    "bucks": "USD",
    "buck": "USD",
    "美元": "USD",
    "美金": "USD",
    "美刀": "USD",
    "刀": "USD",
    "$": "USD",
    "rmb": "CNY",
    "cny": "CNY",
    "人民币": "CNY",
    "yuan": "CNY",
    "kuai": "CNY",
    "块钱": "CNY",
    "块": "CNY",
    "元": "CNY",
    "¥": "CNY",
    "€": "EUR",
    "eur": "EUR",
    "euros": "EUR",
    "euro": "EUR",
    "欧元": "EUR",
    "£": "GBP",
    "gbp": "GBP",
    "pounds": "GBP",
    "pound": "GBP",
    "英镑": "GBP",
    "hk$": "HKD",
    "hkd": "HKD",
    "港币": "HKD",
    "港元": "HKD",
    "jpy": "JPY",
    "yen": "JPY",
    "日元": "JPY",
    "円": "JPY",
    "a$": "AUD",
    "au$": "AUD",
    "aud": "AUD",
    "c$": "CAD",
    "ca$": "CAD",
    "cad": "CAD",
    "s$": "SGD",
    "sgd": "SGD",
    "nt$": "TWD",
    "twd": "TWD",
}
_PREFIXES = (
    "us$",
    "usd",
    "hk$",
    "hkd",
    "au$",
    "a$",
    "aud",
    "ca$",
    "c$",
    "cad",
    "s$",
    "sgd",
    "nt$",
    "twd",
    "rmb",
    "cny",
    "人民币",
    "$",
    "¥",
    "€",
    "eur",
    "£",
    "gbp",
    "jpy",
    "円",
)


def _alternation(words, *, after_number: bool = False) -> str:
    def one(word: str) -> str:
        escaped = re.escape(word)
        if word[-1].isalpha() and word.isascii():
            # Codes and English words stand alone: "USDT" is no USD, "eurozone" no EUR.
            return rf"(?<![A-Za-z]){escaped}(?![A-Za-z])"
        if after_number and not word[-1].isalpha():
            return rf"{escaped}(?!\s*[0-9])"  # in "12 $5" the "$" belongs to the 5
        return escaped

    return "|".join(one(w) for w in sorted(words, key=len, reverse=True))


# 1.200,00 | 1,299.00 | 12,50 | 12.5: a comma before two digits is a decimal comma.
_NUM = (
    r"(?:[0-9]{1,3}(?:\.[0-9]{3})+,[0-9]{2}|[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?"
    r"|[0-9]+,[0-9]{1,2}(?![0-9])"
    r"|[0-9]+(?:\.[0-9]+)?)(?![0-9]|[.,][0-9])"
)
_MONEY = re.compile(
    rf"(?<![A-Za-z0-9_.,/:])(?:(?P<pre>{_alternation(_PREFIXES)})\s*)?(?P<num>{_NUM})"
    r"(?P<mult>\s*[万千](?=\s*[元块美人])|[kK]\b)?"
    rf"\s*(?P<post>{_alternation(CURRENCY_WORDS, after_number=True)})?",
    re.IGNORECASE,
)
_MONEY_CN = re.compile(
    r"(?P<num>[零一二两三四五六七八九十百千万]{1,8})\s*(?P<post>美元|美金|元|块钱|块)(?!儿)"
    r"(?:(?P<jiao>[一二三四五六七八九])(?![零一二两三四五六七八九十百千万]|\s{0,2}[次个天号]))?"
)
# "12块5": five jiao after the kuai, read as 12.5
_KUAI_JIAO = re.compile(r"(?<![0-9.])(?P<num>[0-9]{1,6})块(?P<jiao>[1-9])(?![0-9.]|\s{0,2}[次个天号毛角分])")
# English number words: "twelve dollars fifty", "fifty bucks", "a hundred euros"
_EN_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_EN_TENS = {
    w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2
}
_EN_WORD = "|".join(sorted([*_EN_UNITS, *_EN_TENS, "hundred", "thousand", "a", "and"], key=len, reverse=True))
_EN_CENTS_WORD = "|".join(sorted([*_EN_UNITS, *_EN_TENS], key=len, reverse=True))
_MONEY_WORDS = re.compile(
    rf"\b(?P<num>(?:(?:{_EN_WORD})[ -]){{0,6}}(?:{_EN_WORD}))\s(?P<post>dollars?|bucks?|euros?|yuan|usd|eur|rmb)\b"
    rf"(?:\s(?:and\s)?(?P<cents>(?:{_EN_CENTS_WORD})(?:[ -](?:{_EN_CENTS_WORD}))?)(?:\scents?)?\b)?",
    re.IGNORECASE,
)

# A bare number counts as money only right after one of these (or in an answer).
_MONEY_VERB = re.compile(
    r"(?:\bcharged|\bcharge of|\bbilled|\bdeducted|\bdebited|\brefund(?:ed)?|\brefund of|\bpaid|"
    r"\bspent|\blost|\bcost(?: me)?|扣了我?|扣费|扣款|扣除了?|被扣了?|多扣了?|扣|退款|退还|退回|退|"
    r"充值了?|充了|付了|支付了?|花了|损失了?|金额是|金额为)"
    r"\s*(?:me\s+|of\s+|for\s+|the\s+|about\s+|around\s+|approx\.?\s+|roughly\s+|大概|大约|约|这笔?|那笔?)*$"
    r"|\bfee of\s{0,3}$|\bamount of\s{0,3}$|[这那]笔\s{0,3}$",  # "凌晨2点那笔36.8是啥"
    re.IGNORECASE,
)
_REFUND_AFTER = re.compile(r"\s{0,2}(?:退|refund)", re.IGNORECASE)  # "多的450退我吧"
# What follows a number that is not money: counts, durations, ranges, rough sizes.
_NOT_MONEY_AFTER = re.compile(
    # "the 66 unused hours": a word between the number and its unit
    r"^\s*(?:(?:unused|remaining|used|extra|more|lost|wasted|full|whole|idle|paid|billed)\s{1,3})?"
    r"(?:times?\b|x\b|×|次|个|条|张|tokens?|calls?|requests?|%|％|percent|hours?|hrs?|days?|"
    r"weeks?|months?|minutes?|小时|天|周|分钟|多|余|来|几|\+|年|月|日|号|点|:|/)",
    re.IGNORECASE,
)
# A coupon's or voucher's value is no charge, even with its sign ("I had a $5 coupon from you").
_DISCOUNT_AFTER = re.compile(
    r"^\s{0,3}(?:off\s{0,3})?(?:coupons?|vouchers?|promo|gift\s{0,3}cards?|discount)\b|^\s{0,3}(?:优惠券|代金券|抵扣券)",
    re.IGNORECASE,
)

_ROLE_WORDS = {
    "refund": r"\brefund|\breimburs|money back|\bback\b|\bowe\b|\brevers|退款|退还|退回|退给|退我|返还|退|要回",
    "total": r"\btotal|altogether|in all|总共|一共|合计|总计|累计|共计|=\s*$",
    "charge": r"\bcharg|\bbill|deduct|debit|\btook\b|\btaken\b|\bate\b|\blost\b|\bcost|扣|少了|损失|多收|被收",
    "unit": r"\beach\b|\bper\b|apiece|every time|每次|每个|每笔|每条",
    "balance": r"balance|\bleft\b|remain|\bnow at\b|余额|还剩|剩下|还有|剩余",
    "topup": r"top(?:ped)?[- ]?up|recharg|充值|充了",
}
_ROLE_PATTERNS = {role: re.compile(p, re.IGNORECASE) for role, p in _ROLE_WORDS.items()}
_PRICE_AFTER = re.compile(
    r"^\s*(?:的)?\s*(?:(?:monthly|annual|yearly|pro|basic)\s+)?(?:plan|subscription|package|tier|"
    r"套餐|月卡|年卡|季卡|会员|/\s*(?:month|mo|year|yr|月|年)|per month|a month|每月)",
    re.IGNORECASE,
)
# "You already refunded $10 to me in March", "上次已经退过20元": a refund made, not the one asked for
_REFUNDED_BEFORE = re.compile(
    r"\b(?:already|previously|once|you|have|has|had|was|were|got)\s{1,3}(?:\w+\s{1,3})?refunded\b"
    r"|已经?\s{0,2}(?:给我)?\s{0,2}退(?:过|了)|退过",
    re.IGNORECASE,
)
# "金额是 ¥75，不是 ¥57", "it was $40, not $14": the amount the customer corrects away
_NOT_BEFORE = re.compile(r"(?:不是|而非|并非|\bnot|\bnever)\s{0,3}(?:the\s{1,3})?$", re.IGNORECASE)
# "开票金额 ¥1,000.00", "重新开具 ¥600 的发票": what an invoice says, not the claim
_INVOICE_BEFORE = re.compile(
    r"(?:开票|发票|invoice(?:d)?)\s{0,3}(?:金额|总额|amount|total|of|for)?\s{0,3}[:：]?\s{0,3}$", re.IGNORECASE
)
_INVOICE_AFTER = re.compile(r"^\s{0,3}(?:的)?\s{0,3}(?:发票|invoice)", re.IGNORECASE)
# Amounts set aside whatever their other roles: a rate, a refund already made, one corrected away, an invoice's.
_ASIDE = frozenset({"unit", "earlier", "negated", "invoice"})
# "$3.00 / 1M input", "$1.89/hr", "¥15/GB": a rate, never the claim by itself (a plan's "/month" is a price)
_RATE_AFTER = re.compile(r"^\s{0,2}/\s{0,2}(?!(?:month|mo|year|yr)\b|[月年])[0-9A-Za-z\u4e00-\u9fff]", re.IGNORECASE)
# "charged £15 instead of £10", "refund the difference", "按比例退款": the amount asked for
# is not one written in the text, so only an explicit "refund X" may still be taken.
_COMPARISON = re.compile(
    r"instead of|rather than|should (?:have )?(?:been|be|cost|only)|\bdifference\b|而不是|本应|"
    # "应该是50元", "应该只扣¥30", not "应该是系统故障" or "应该用不了这么多" (a guess, no price)
    r"应该[^，,。！!？?\n]{0,6}?(?:[¥￥$0-9]|[一二两三四五六七八九十百]+\s{0,2}[元块])|"
    r"本该|差价|差额",
    re.IGNORECASE,
)
_PARTIAL = re.compile(r"\bpartial|pro[- ]?rat|按比例|部分退款|退一部分|折算", re.IGNORECASE)
# "charged $8 ... another $8, both for jobs that never ran": several charges, total unwritten.
_SEVERAL_CHARGES = re.compile(r"\b(?:both|all of them|each of them)\b|都是|两笔都|全部都|都没", re.IGNORECASE)
_REFUND_REST = re.compile(
    r"(?:剩下的|剩余的?|余额)\s{0,3}(?:都|全部)?\s{0,3}退|退\s{0,3}(?:回|还)?\s{0,3}(?:剩下的|剩余的?|余额)"
    r"|\brefund\s(?:the\s|my\s)?(?:rest|remaining|remainder|balance|unused)"
    r"|\b(?:the\s)?(?:rest|remainder|remaining balance|balance)\s(?:back|refunded)\b",
    re.IGNORECASE,
)
_LIST_GAP = re.compile(r"\s*(?:,|，|、|\+|&|and|和|及|以及)\s*(?:and\s*)?", re.IGNORECASE)
# "i.e. $124.74", "e.g. $5": an abbreviation's dot ends no sentence
_CLAUSE_BREAK = re.compile(
    r"[。！？；;!?\n，,]|(?<!i\.e)(?<!e\.g)\.(?=\s|$)|(?<=[\u4e00-\u9fff0-9])[ \t](?=[\u4e00-\u9fff])"
)
_SENTENCE_BREAK = re.compile(r"[。！？!?\n]|(?<!i\.e)(?<!e\.g)\.(?=\s|$)")


def to_decimal(number_text: str) -> Decimal | None:
    """'1,299.00' -> 1299.00, '12,50' -> 12.50 (price-parser knows both separators)."""
    try:
        amount = Price.fromstring(number_text).amount
    except (InvalidOperation, ValueError):
        return None
    return amount if amount is not None and amount.is_finite() else None


def _currency(word: str | None) -> str | None:
    return CURRENCY_WORDS.get(word.lower()) if word else None


def _mention_from(m: re.Match, text: str, *, answer: bool) -> AmountMention | None:
    pre, post = m.group("pre"), m.group("post")
    if m.group("num") is None:
        return None
    if not (pre or post):
        before = text[max(0, m.start() - 24) : m.start()]
        if not answer and not _MONEY_VERB.search(before) and not _REFUND_AFTER.match(text[m.end() : m.end() + 6]):
            return None
        if _NOT_MONEY_AFTER.match(text[m.end() : m.end() + 24]):
            return None
    if _DISCOUNT_AFTER.match(text[m.end() : m.end() + 24]):
        return None
    amount = to_decimal(m.group("num"))
    if amount is None:
        return None
    mult = (m.group("mult") or "").strip().lower()
    if mult:
        amount = (amount * {"万": 10000, "千": 1000, "k": 1000}[mult]).normalize() + 0  # 1.5万 -> 15000
    if pre and post and _currency(pre) != _currency(post) and post not in ("元", "块"):
        return None  # "$12 RMB": contradictory, let a human read it
    currency = _currency(pre) or _currency(post)
    end = m.start() + len(m.group(0).rstrip())  # the optional currency's \s* may have run over a line end
    return AmountMention(m.start(), end, Money(amount, currency), _roles(text, m.start(), end))


def _roles(text: str, start: int, end: int) -> frozenset[str]:
    clauses = _CLAUSE_BREAK.split(text[max(0, start - 40) : start])
    before, after = clauses[-1], _CLAUSE_BREAK.split(text[end : end + 16])[0]
    roles = {
        role
        for role, pattern in _ROLE_PATTERNS.items()
        if pattern.search(before) or (role != "topup" and pattern.search(after))
    }
    # "Please refund the difference, RMB 128", "全部退给我，一共3500元": asked back one clause earlier
    lead = _SENTENCE_BREAK.split(text[max(0, start - 40) : start])[-1]
    if (
        len(clauses) > 1
        and _ROLE_PATTERNS["refund"].search(clauses[-2])
        and len(lead) > len(before)
        and not (roles & {"balance", "unit", "charge", "topup"})
    ):
        roles.add("refund")
    if "refund" in roles and _REFUNDED_BEFORE.search(before):
        roles = (roles - {"refund"}) | {"earlier"}
    if _NOT_BEFORE.search(text[max(0, start - 12) : start]):
        roles.add("negated")
    if _INVOICE_BEFORE.search(text[max(0, start - 16) : start]) or _INVOICE_AFTER.match(text[end : end + 8]):
        roles.add("invoice")
    if _PRICE_AFTER.match(text[end : end + 24]):
        roles.add("price")
    elif _RATE_AFTER.match(text[end : end + 8]):
        roles.add("unit")
    return frozenset(roles)


def find_amounts(text: str, *, answer: bool = False) -> list[AmountMention]:
    found = []
    for m in _MONEY.finditer(text):
        mention = _mention_from(m, text, answer=answer)
        if mention:
            found.append(mention)
    for m in _MONEY_CN.finditer(text):
        value = cn_number(m.group("num"))
        if value and not any(f.start <= m.start() < f.end for f in found):
            jiao = cn_number(m.group("jiao")) if m.group("jiao") else None  # one digit: always a number
            amount = Decimal(value) + (Decimal(jiao) / 10 if jiao is not None else 0)
            found.append(
                AmountMention(
                    m.start(), m.end(), Money(amount, _currency(m.group("post"))), _roles(text, m.start(), m.end())
                )
            )
    for m in _KUAI_JIAO.finditer(text):
        found = [f for f in found if not m.start() <= f.start < m.end()]  # "12块" alone was read first
        amount = Decimal(m.group("num")) + Decimal(m.group("jiao")) / 10
        found.append(AmountMention(m.start(), m.end(), Money(amount, "CNY"), _roles(text, m.start(), m.end())))
    for m in _MONEY_WORDS.finditer(text):
        value = _en_number(m.group("num"))
        if value and not any(f.start <= m.start() < f.end for f in found):
            cents = _en_number(m.group("cents")) if m.group("cents") else 0
            amount = Decimal(value) + (Decimal(cents) / 100 if cents and cents < 100 else 0)
            found.append(
                AmountMention(
                    m.start(), m.end(), Money(amount, _currency(m.group("post"))), _roles(text, m.start(), m.end())
                )
            )
    # An amount of zero is a balance or a price of nothing, never a refund.
    return sorted((f for f in found if f.money.amount > 0), key=lambda f: f.start)


def _en_number(words: str) -> int | None:
    """'twelve' -> 12, 'a hundred and fifty' -> 150, 'twenty-five' -> 25; None without a number word."""
    total, current, seen = 0, 0, False
    for word in re.split(r"[ -]", words.lower()):
        if word in _EN_UNITS or word in _EN_TENS:
            current += _EN_UNITS.get(word, 0) + _EN_TENS.get(word, 0)
            seen = True
        elif word == "a":
            current += 1
        elif word == "hundred":
            current, seen = max(current, 1) * 100, True
        elif word == "thousand":
            total, current, seen = total + max(current, 1) * 1000, 0, True
    return total + current if seen else None


def choose_amount(mentions: list[AmountMention], text: str) -> Money | None:
    """The one amount the text makes certain, or None.

    The strongest kind of mention that occurs decides: an amount asked back, then a total,
    then a charge, then any amount at all. Two different amounts of that kind mean "ask".
    """
    if not mentions:
        return None
    tiers = ["refund", "total", "charge", None]
    repeated = len(mentions) > len({m.money.amount for m in mentions})
    if (
        _COMPARISON.search(text)
        or _PARTIAL.search(text)
        or _is_list(mentions, text)
        or (repeated and _SEVERAL_CHARGES.search(text))
    ):
        tiers = ["refund"]
    balances = {m.money for m in mentions if "balance" in m.roles}
    if len(balances) == 1 and _REFUND_REST.search(text) and not any("refund" in m.roles for m in mentions):
        return balances.pop()  # "余额还剩187.3元，能不能把剩下的退给我"
    for role in tiers:
        pool = [m for m in mentions if role is None or role in m.roles]
        # a rate ("billed at $3.00 / 1M") is never the claim by itself, nor (among any amounts) a plan's price
        pool = [m for m in pool if not m.roles & _ASIDE] or pool
        if role is None:
            pool = [m for m in pool if "price" not in m.roles] or pool
        if role is not None and tiers == ["refund"]:
            pool = [m for m in pool if "price" not in m.roles]
        amounts = {m.money.amount for m in pool}
        if len(amounts) > 1:
            return None
        if amounts:
            currencies = {m.money.currency for m in pool} - {None}
            currency = currencies.pop() if len(currencies) == 1 else None
            return Money(max((m.money.amount for m in pool), key=_written_precision), currency)
    return None


def _written_precision(amount: Decimal) -> int:
    """Prefer '12.50' over '12.5' when both spellings of one amount occur."""
    exponent = amount.as_tuple().exponent  # 'n', 'N' or 'F' for NaN and infinity
    return -exponent if isinstance(exponent, int) else 0


def _is_list(mentions: list[AmountMention], text: str) -> bool:
    """'$5, $5 and $5': several charges listed, whose total nobody wrote down."""
    return any(_LIST_GAP.fullmatch(text[a.end : b.start]) for a, b in itertools.pairwise(mentions))
