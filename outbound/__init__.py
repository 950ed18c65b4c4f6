"""What leaves the desk: the outbox's delivery loop and the e-mail sender.

- dispatcher.py: the send loop of `serve` (every enabled channel's outbox, in the worker's process).
- delivery.py: one pass over the outbox for one sender (retry, back-off, record the result).
- email_sender.py: letters over SMTP to a relay, or written as .eml files when none is set.

Chat senders stay with their channel (bot/send.py).
"""
