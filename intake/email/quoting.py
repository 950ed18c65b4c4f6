"""The customer's own words: quoted earlier letters and signatures left out, forwards set aside.

Reply headers come in many clients' wordings; these cover the common English and Chinese ones
(Gmail, Outlook, Apple Mail, Thunderbird, QQ Mail, NetEase, Foxmail). A forwarded message is
not a quote: it is often the very receipt that proves the charge, so it is returned
separately for the agent instead of being dropped.
"""

from __future__ import annotations

import re

FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|fw|转发|轉寄|轉發)\s*[:：]", re.IGNORECASE)
FORWARD_MARKERS = [
    re.compile(
        r"^-{2,}\s*(Forwarded message|Forwarded Message|转发的邮件|转发邮件|轉寄郵件|轉發郵件)\s*-{2,}", re.IGNORECASE
    ),
    re.compile(r"^Begin forwarded message\s*:", re.IGNORECASE),
    re.compile(
        r"^-{2,}\s*(Original Message|原始邮件|原始郵件)\s*-{2,}", re.IGNORECASE
    ),  # a forward only with a Fwd subject
]
QUOTE_MARKERS = [
    re.compile(r"^On\b.{3,300}\bwrote\s*:\s*$", re.IGNORECASE),
    re.compile(
        r"^-{2,}\s*(Original Message|Reply Message|Replied Message|原始邮件|原始郵件|回复的原邮件)\s*-{2,}",
        re.IGNORECASE,
    ),
    re.compile(r"^在.{2,200}(写道|寫道)\s*[:：]?\s*$"),
    re.compile(r"^.{2,200}(写道|寫道)\s*[:：]\s*$"),
    re.compile(r"^Le\b.{3,200}\ba écrit\s*:\s*$", re.IGNORECASE),
    re.compile(r"^Am\b.{3,200}\bschrieb\b.{0,100}:\s*$", re.IGNORECASE),
]
HEADER_BLOCK_START = re.compile(r"^\*?(From|发件人|發件人|寄件者|寄件人)\*?\s*[:：]", re.IGNORECASE)
HEADER_BLOCK_NEXT = re.compile(
    r"^\*?(Sent|Date|To|Subject|Cc|发送时间|發送時間|时间|日期|收件人|主题|主題|主旨|抄送)\*?\s*[:：]", re.IGNORECASE
)
OUTLOOK_RULE = re.compile(r"^_{10,}\s*$")
WRAPPED_ON = re.compile(r"^On\b.{3,200}$")
SIGNATURE_DELIMITER = re.compile(r"^(-- ?|—— ?)$")
DEVICE_LINE = re.compile(
    r"^(Sent from my .{1,60}|Sent from .{1,40} for (iOS|Android)|Get Outlook for .{1,30}|"
    r"发自我的.{1,30}|从我的.{1,30}发送|来自.{1,20}(邮箱|客户端))$",
    re.IGNORECASE,
)
CLOSING = re.compile(
    r"^(best regards|kind regards|warm regards|regards|best|thanks|thank you|many thanks|cheers|sincerely|yours|"
    r"谢谢|感谢|多谢|此致|祝好|顺祝商祺|敬礼)[,，.!！。 ]*$",
    re.IGNORECASE,
)
MAX_SIGNATURE_LINES = 4
GREETING = re.compile(
    r"^(hi|hello|hey|dear\b.{0,60}|good (morning|afternoon|evening)|greetings|"
    r"您好|你好|大家好|尊敬的.{0,30})[ ,，!！.。:：]*$",
    re.IGNORECASE,
)


def line_breaks_unified(text: str) -> str:
    return (text or "").replace("\r\n", "\n").replace("\r", "\n")


def lines_of(text: str) -> list[str]:
    return line_breaks_unified(text).split("\n")


def strip_quotes(text: str, subject: str = "") -> str:
    """What the customer wrote in this message: no quoted letter, no signature, no forward."""
    own, _ = split_forward(text, subject)
    return own


def split_forward(text: str, subject: str = "", limit: int | None = None) -> tuple[str, str]:
    """(the customer's own words, the forwarded message below them or "").

    With `limit`, only that many characters are searched for the cut; what lies past them
    goes, unread, with the part it follows (the own words, or the forward)."""
    if limit is not None and len(text) > limit:
        line_end = text.rfind("\n", 0, limit)  # cut between lines, so both parts keep whole lines
        limit = line_end + 1 if line_end > limit // 2 else limit
    rest = line_breaks_unified(text[limit:]) if limit is not None else ""
    lines = lines_of(text[:limit] if limit is not None else text)
    cut, forward = find_cut(lines, bool(FORWARD_SUBJECT.match(subject or "")))
    own = [line.rstrip() for line in lines[:cut] if not line.lstrip().startswith(">")]
    forwarded = "\n".join(lines[cut:]).strip() if forward else ""
    own_text = "\n".join(drop_greeting(drop_signature(own))).strip()
    if rest and forward:
        forwarded += "\n" + rest
    elif rest and cut >= len(lines) - 1:  # no quote began within the limit: the rest is theirs too
        own_text += "\n" + rest
    return own_text, forwarded


def find_cut(lines: list[str], forward_subject: bool) -> tuple[int, bool]:
    """The line where the quoted or forwarded part starts, and whether it is a forward."""
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        if FORWARD_MARKERS[0].match(line) or FORWARD_MARKERS[1].match(line):
            return index, True
        following = [later.strip() for later in lines[index + 1 : index + 6] if later.strip()]
        if is_quote_start(line, following):
            return index, forward_subject
    return len(lines), False


def is_quote_start(line: str, following: list[str]) -> bool:
    if any(pattern.match(line) for pattern in QUOTE_MARKERS):
        return True
    if WRAPPED_ON.match(line) and following and re.search(r"\bwrote\s*:\s*$", following[0], re.IGNORECASE):
        return True
    if HEADER_BLOCK_START.match(line) and any(HEADER_BLOCK_NEXT.match(next_line) for next_line in following[:4]):
        return True
    if OUTLOOK_RULE.match(line) and following and HEADER_BLOCK_START.match(following[0]):
        return True
    return False


def drop_greeting(lines: list[str]) -> list[str]:
    """A salutation alone on the first line says nothing about the charge."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if len(filled) > 1 and GREETING.match(lines[filled[0]].strip()):
        return lines[filled[0] + 1 :]
    return lines


def drop_signature(lines: list[str]) -> list[str]:
    """Cut at a signature delimiter or device line anywhere, or at a closing word near the end."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if index > 0 and (SIGNATURE_DELIMITER.match(stripped) or DEVICE_LINE.match(stripped)):
            return lines[:index]
    for index in range(len(lines) - 1, 0, -1):
        if CLOSING.match(lines[index].strip()):
            after = [later.strip() for later in lines[index + 1 :] if later.strip()]
            # A closing line followed by a name at most; never by details the customer filled in.
            if len(after) <= MAX_SIGNATURE_LINES and not any(re.search(r"\d|[:：]", later) for later in after):
                return lines[:index]
            break
    return lines
