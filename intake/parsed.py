"""What a channel's parser hands the pipeline: the normalized message plus transport facts."""

from __future__ import annotations

from dataclasses import dataclass

from refunddesk.policy.model import InboundMessage


@dataclass(frozen=True)
class Parsed:
    inbound: InboundMessage
    dedup_key: str  # the same customer message, however often it arrives
    message_id: str = ""  # the transport's own id of this message (email Message-ID)
    references: tuple[str, ...] = ()  # ids this message answers, newest first (email threading)
    html: str | None = None  # sanitized HTML for agents, if the message had any
    no_reply_reason: str | None = None  # why no automatic reply may be sent (RFC 3834), if any
    bounce_of: tuple[str, ...] = ()  # our message ids a delivery report returns
