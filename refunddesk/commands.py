"""The desk's own commands: `init` sets it up, `serve` runs it. Both end by saying where customers
write, where agents log in and, while nobody can, how to add the first agent.
"""

from __future__ import annotations

import argparse
import shutil
from importlib import resources

import sqlite_utils

from refunddesk.addresses import endpoint
from refunddesk.commandline import add_command, config_option, fail, open_desk, opened
from refunddesk.config import DEFAULT_CONFIG, ENV_CONFIG, locate
from refunddesk.desk import Desk
from refunddesk.review.agents import MIN_PASSWORD, any_active


def register(commands: argparse._SubParsersAction) -> None:
    init = add_command(
        commands,
        "init",
        "write a configuration file if there is none, and create or upgrade the store",
        f"The file is the one --config names, else ${ENV_CONFIG}, else ./{DEFAULT_CONFIG}; an existing file is\n"
        "never overwritten. A new one is config.example.toml: every key with its default, the store under\n"
        "./var beside it, refunds@example.com and appeals@example.com as the desk's addresses (set your own\n"
        "in [email]). Running init again is safe: it only brings the store to the current schema.\n\n"
        "example:\n  refunddesk init && refunddesk agents add alice && refunddesk serve",
    )
    init.set_defaults(func=cmd_init)

    serve = add_command(
        commands,
        "serve",
        "run the desk: the worker, the senders and every enabled channel, until stopped",
        "Listens for mail by SMTP ([email.smtp_intake]), polls IMAP ([email.imap]), runs the Telegram bot\n"
        "([telegram]) and the agents' web console ([console]), as enabled in the configuration. SIGTERM or\n"
        "Ctrl-C stops it cleanly: channels stop accepting, the message and the delivery in hand finish.\n"
        "Once everything listens it prints the addresses to mail and the console's URL.",
    )
    serve.set_defaults(func=cmd_serve)


def cmd_init(args: argparse.Namespace) -> int:
    target = locate(args.config)
    if target.exists():
        print(f"using {target}")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(resources.files("refunddesk").joinpath("config.example.toml")), target)
        print(f"wrote {target} (set the desk's own addresses in its [email] table)")
    desk, db = opened(args)  # the file just found or written: both locate it the same way
    desk.files.mkdir(parents=True, exist_ok=True)
    print(f"store ready at {desk.db_path}")
    for line in welcome(desk, db, config_option(args)):
        print(line)
    db.conn.close()
    print(f"start the desk with: refunddesk{config_option(args)} serve")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # Only `serve` loads the channels, the worker and the reader behind them.
    from refunddesk.service import ListenError, run  # noqa: PLC0415

    desk = open_desk(args)

    def ready() -> None:
        db = desk.open_db()
        try:
            for line in welcome(desk, db, config_option(args)):
                print(line, flush=True)  # under a service manager stdout is a pipe: say it now
        finally:
            db.conn.close()

    try:
        return run(desk, on_ready=ready)
    except ListenError as exc:
        return fail(str(exc))


def welcome(desk: Desk, db: sqlite_utils.Database, config_option: str = "") -> list[str]:
    """Where customers write, where agents log in, and how to add the first agent while there is none."""
    config = desk.config
    smtp, imap = config.email.smtp_intake, config.email.imap
    lines = [f"customers write to {desk.addresses.refunds} (refunds) and {desk.addresses.appeals} (appeals)"]
    if smtp.enabled:
        listening = endpoint(smtp.host, smtp.port)
        lines.append(f"  mail for them is received by SMTP on {listening} (point your MX or relay here)")
    if imap.enabled:
        lines.append(f"  mail for them is fetched by IMAP from {imap.username} at {endpoint(imap.host, imap.port)}")
    if not smtp.enabled and not imap.enabled:
        lines.append("  no mail channel is enabled (email.smtp_intake.enabled, email.imap.enabled)")
    if config.telegram.enabled:
        lines.append("  and the Telegram bot takes requests in private chats")
    if config.console.enabled:
        lines.append(f"agents' console: http://{endpoint(config.console.host, config.console.port)}/")
    else:
        lines.append("agents' console: off (console.enabled = false); agents use the refunddesk command")
    if not any_active(db):
        lines.append(
            f"no agent can log in or decide yet: add one with `refunddesk{config_option} agents add NAME`"
            f" (it asks for a password of at least {MIN_PASSWORD} characters; --password-stdin reads it"
            " from standard input instead)"
        )
    return lines
