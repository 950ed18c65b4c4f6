"""The senders the worker's send loop delivers with: e-mail always, each enabled chat channel.

Chosen here, where the service is composed, so that outbound/ knows no channel: it delivers
with whatever it is given.
"""

from __future__ import annotations

import asyncio

from refunddesk.bot.send import TelegramSender, make_bot
from refunddesk.desk import Desk
from refunddesk.outbound.delivery import Sender
from refunddesk.outbound.dispatcher import Closer
from refunddesk.outbound.email_sender import EmailSender


def open_senders(desk: Desk) -> tuple[list[Sender], list[Closer]]:
    email_sender = EmailSender.for_desk(desk)
    senders: list[Sender] = [email_sender]
    closers: list[Closer] = [email_sender.close]
    if desk.config.telegram.enabled:
        telegram = TelegramSender(make_bot(desk.config))
        connecting = asyncio.create_task(telegram.connect(), name="telegram-sender-connect")

        async def close_telegram() -> None:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            await telegram.close()

        senders.append(telegram)
        closers.append(close_telegram)
    return senders, closers
