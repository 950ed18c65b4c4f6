"""The baseline bot of bench/telegram.py: the real python-telegram-bot, polling with its own
Updater, answering every update with one message (and every button press with
answerCallbackQuery first), as the smallest useful bot does. No store, no dialog.

    python bench/_echo_bot.py API_URL TOKEN
"""
from __future__ import annotations

import os
import sys

# bench/telegram.py would shadow the library: drop this folder from the import path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

from telegram import Update  # noqa: E402
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters  # noqa: E402


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    text = message.text or message.caption or ("photo" if message.photo else "message")
    await context.bot.send_message(update.effective_chat.id, f"echo: {text}")


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer()
    await context.bot.send_message(update.effective_chat.id, f"pressed: {query.data}")


def main() -> None:
    api, token = sys.argv[1], sys.argv[2]
    app = Application.builder().token(token).base_url(f"{api}/bot").base_file_url(f"{api}/file/bot").build()
    app.add_handler(MessageHandler(filters.ALL, echo))
    app.add_handler(CallbackQueryHandler(button))
    app.run_polling(allowed_updates=["message", "callback_query"], poll_interval=0.0, timeout=25)


if __name__ == "__main__":
    main()
