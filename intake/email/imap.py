"""The IMAP poller: reads a mailbox that some other MTA fills, and spools each message once.

Order of effects, so that nothing is lost or doubled whatever fails when:
  1. fetch with BODY.PEEK[] (the \\Seen flag stays as it was: a person may have read the mail
     already, so the unseen flag is never what selects a message);
  2. spool under the key (account, mailbox, UIDVALIDITY, UID) and raise the watermark, in one
     commit; the key is unique, so a second fetch never makes a second spool row;
  3. only then move the message to `processed_folder` (MOVE, or COPY + \\Deleted + EXPUNGE).
A crash between 2 and 3 leaves a message in the folder that is already spooled: the next pass
sees its key and only moves it. A new UIDVALIDITY resets the watermark.

The poller runs in a thread of its own with its own SQLite connection. It waits with IDLE
when the server offers it (re-issued well inside the 29 minutes RFC 2177 allows), otherwise
it polls every `poll_seconds`; even while idling it re-reads the folder that often, a safety
net for a notification lost between commands. Any connection failure (BYE, abort, reset)
means: log, back off, reconnect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlite_utils
from imapclient import IMAPClient

from refunddesk.desk import Desk
from refunddesk.store import spool
from refunddesk.store.clock import stamp, utcnow
from refunddesk.store.db import transaction

from . import authresults
from .parse import mail_conversation

log = logging.getLogger("refunddesk.imap")
IDLE_RENEW_SECONDS = 24 * 60  # RFC 2177: servers may drop an IDLE after 29 minutes
IDLE_CHECK_SECONDS = 1.0  # how quickly a stop request is noticed while idling
BACKOFF_START = 0.5
BACKOFF_MAX = 60.0
FETCH_BATCH = 20
MAX_DRAIN_PASSES = 10  # a mailbox filling faster than this is read again after IDLE
CONNECT_TIMEOUT = 30


class ConnectionDropped(Exception):
    """The server said BYE or closed the connection."""


def transport_id(account: str, mailbox: str, uidvalidity: int, uid: int) -> str:
    """The spool key of one IMAP message, in the shape of an RFC 5092 IMAP URL."""
    return f"imap://{account}/{mailbox};UIDVALIDITY={uidvalidity}/;UID={uid}"


def load_watermark(db: sqlite_utils.Database, account: str, mailbox: str) -> tuple[int, int] | None:
    row = db.execute(
        "SELECT uidvalidity, last_uid FROM imap_watermarks WHERE account = ? AND mailbox = ?", [account, mailbox]
    ).fetchone()
    return (row[0], row[1]) if row else None


def save_watermark(db: sqlite_utils.Database, account: str, mailbox: str, uidvalidity: int, last_uid: int) -> None:
    db.execute(
        """
        INSERT INTO imap_watermarks (account, mailbox, uidvalidity, last_uid, updated_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (account, mailbox) DO UPDATE SET
            last_uid = CASE WHEN uidvalidity = excluded.uidvalidity THEN max(last_uid, excluded.last_uid)
                ELSE excluded.last_uid END,
            uidvalidity = excluded.uidvalidity,
            updated_at = excluded.updated_at
        """,
        [account, mailbox, uidvalidity, last_uid, stamp(utcnow())],
    )


def is_spooled(db: sqlite_utils.Database, key: str) -> bool:
    return (
        db.execute("SELECT 1 FROM inbound WHERE channel = 'email' AND transport_id = ?", [key]).fetchone() is not None
    )


def chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Poller:
    def __init__(self, desk: Desk, wake: Callable[[], None]) -> None:
        config = desk.config
        self.desk = desk
        self.wake = wake
        self.host = config.email.imap.host
        self.port = config.email.imap.port
        self.tls = config.email.imap.tls
        self.username = config.email.imap.username
        self.password = config.email.imap.password
        self.folder = config.email.imap.folder
        self.processed_folder = config.email.imap.processed_folder
        self.poll_seconds = max(1, config.email.imap.poll_seconds)
        self.limit = config.email.smtp_intake.max_message_bytes  # one size limit for all mail intake
        self.account = f"{self.username}@{self.host}"
        self.trusted_authserv_id = config.email.trusted_authserv_id
        self.our_authserv_ids = authresults.our_authserv_ids(desk.addresses.ours(), desk.mail_domain)
        self.stopping = threading.Event()
        self.idling = threading.Event()  # observable: the poller is inside IDLE right now
        self.connections = 0  # observable: successful logins so far
        self.thread = threading.Thread(target=self.run, name="imap-poller", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Poller:
        self.thread.start()
        return self

    def stop(self, timeout: float = 15) -> None:
        self.stopping.set()
        self.thread.join(timeout)

    def run(self) -> None:
        db = self.desk.open_db()
        backoff = BACKOFF_START
        try:
            while not self.stopping.is_set():
                logged_in = self.connections
                try:
                    self.session(db)
                except Exception as exc:
                    if self.stopping.is_set():
                        break
                    if self.connections > logged_in:
                        backoff = BACKOFF_START  # the server was reachable: start the back-off afresh
                    log.warning(
                        "IMAP %s:%s: %s: %s; reconnecting in %.1f s",
                        self.host,
                        self.port,
                        type(exc).__name__,
                        exc,
                        backoff,
                    )
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self.idling.clear()
            db.conn.close()

    def connect(self) -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=self.tls, timeout=CONNECT_TIMEOUT)
        try:
            client.login(self.username, self.password)
        except BaseException:
            close_quietly(client)
            raise
        self.connections += 1
        return client

    def session(self, db: sqlite_utils.Database) -> None:
        """One connection: drain the folder, wait for news, repeat until stopped or dropped."""
        client = self.connect()
        try:
            self.ensure_processed_folder(client)
            log.info("IMAP connected to %s:%s as %s, reading %s", self.host, self.port, self.username, self.folder)
            while not self.stopping.is_set():
                self.drain(client, db)
                self.wait_for_news(client)
        finally:
            self.idling.clear()
            close_quietly(client)

    def ensure_processed_folder(self, client: IMAPClient) -> None:
        if self.processed_folder and not client.folder_exists(self.processed_folder):
            client.create_folder(self.processed_folder)

    # --- reading -------------------------------------------------------------------------------

    def drain(self, client: IMAPClient, db: sqlite_utils.Database) -> int:
        """Read the folder until a pass finds nothing to do.

        An EXISTS for mail that lands while we fetch or move arrives with that command's
        answer, where imapclient keeps it to itself; IDLE would then wait for news it was
        already given. A last, quiet pass right before IDLE closes that gap.
        """
        stored = 0
        for _ in range(MAX_DRAIN_PASSES):
            spooled, moved = self.drain_once(client, db)
            stored += spooled
            if not spooled and not moved:
                break
        return stored

    def drain_once(self, client: IMAPClient, db: sqlite_utils.Database) -> tuple[int, int]:
        """Spool every message of the folder not yet spooled, then move what is spooled.
        Returns (messages spooled, messages moved)."""
        info = client.select_folder(self.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        mark = load_watermark(db, self.account, self.folder)
        if mark is None or mark[0] != uidvalidity:
            if mark is not None:
                log.warning(
                    "IMAP %s: UIDVALIDITY changed from %s to %s; reading the folder afresh",
                    self.folder,
                    mark[0],
                    uidvalidity,
                )
            with transaction(db):
                save_watermark(db, self.account, self.folder, uidvalidity, 0)
            last_uid = 0
        else:
            last_uid = mark[1]
        moving = bool(self.processed_folder)
        if moving:
            uids = sorted(client.search("ALL"))  # the folder is drained, so this stays short
        else:
            # The range search also returns the highest UID when nothing is newer: filter it.
            uids = sorted(uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)
        keys = {uid: transport_id(self.account, self.folder, uidvalidity, uid) for uid in uids}
        done = [uid for uid in uids if is_spooled(db, keys[uid])]
        already = set(done)
        fresh = [uid for uid in uids if uid not in already]
        stored = moved = 0
        for batch in chunks(fresh, FETCH_BATCH):
            spooled = self.fetch_and_spool(client, db, batch, uidvalidity, keys)
            stored += len(spooled)
            if spooled:
                self.wake()
            if moving:
                moved += self.move(client, spooled)
        if moving and done:
            # Spooled before but still here: the move after an earlier commit did not happen.
            moved += self.move(client, done)
        return stored, moved

    def fetch_and_spool(
        self, client: IMAPClient, db: sqlite_utils.Database, uids: list[int], uidvalidity: int, keys: dict[int, str]
    ) -> list[int]:
        sizes = client.fetch(uids, ["RFC822.SIZE", "FLAGS"])
        small = [uid for uid in uids if uid in sizes and int(sizes[uid].get(b"RFC822.SIZE", 0)) <= self.limit]
        bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        large = [uid for uid in uids if uid in sizes and uid not in small]
        heads = client.fetch(large, ["BODY.PEEK[HEADER]"]) if large else {}
        spooled: list[int] = []
        for uid in uids:
            if uid not in sizes:
                continue  # expunged by another client meanwhile: nothing to store, nothing lost here
            meta: dict[str, Any] = {
                "source": "imap",
                "mailbox": self.folder,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "flags": [
                    flag.decode("ascii", "replace") if isinstance(flag, bytes) else str(flag)
                    for flag in sizes[uid].get(b"FLAGS", ())
                ],
            }
            if uid in bodies:
                raw = bodies[uid].get(b"BODY[]")
            else:
                # Too large to take in: keep its header as a dead letter for the agents; the
                # message itself stays intact on the server.
                raw = heads.get(uid, {}).get(b"BODY[HEADER]")
                meta["oversized"] = int(sizes[uid].get(b"RFC822.SIZE", 0))
            if raw is None:
                continue
            raw, meta["authentication"] = authresults.examine(
                bytes(raw), self.our_authserv_ids, self.trusted_authserv_id
            )
            with transaction(db):
                spool.spool(db, "email", keys[uid], raw, utcnow(), meta, mail_conversation(raw, meta))
                save_watermark(db, self.account, self.folder, uidvalidity, uid)
            spooled.append(uid)
        return spooled

    def move(self, client: IMAPClient, uids: list[int]) -> int:
        if not uids:
            return 0
        if client.has_capability("MOVE"):
            client.move(uids, self.processed_folder)
            return len(uids)
        client.copy(uids, self.processed_folder)
        client.add_flags(uids, [b"\\Deleted"], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()
        return len(uids)

    # --- waiting -------------------------------------------------------------------------------

    def wait_for_news(self, client: IMAPClient) -> None:
        if not client.has_capability("IDLE"):
            self.stopping.wait(self.poll_seconds)
            if not self.stopping.is_set():
                client.noop()  # a dead connection shows here, before the next drain
            return
        client.idle()
        self.idling.set()
        started = time.monotonic()
        # IDLE brings news at once; the folder is still read every poll_seconds, so that a
        # notification the server sent some other way costs at most that long.
        renew = min(IDLE_RENEW_SECONDS, self.poll_seconds)
        try:
            while not self.stopping.is_set() and time.monotonic() - started < renew:
                asked = time.monotonic()
                responses = client.idle_check(timeout=IDLE_CHECK_SECONDS)
                if any(is_bye(r) for r in responses):
                    raise ConnectionDropped("server said BYE during IDLE")
                if any(is_news(r) for r in responses):
                    break
                if not responses and time.monotonic() - asked < IDLE_CHECK_SECONDS / 2:
                    # Readable yet nothing to read: imapclient hides an EOF this way. Ending
                    # IDLE asks the server; a dead connection raises there.
                    break
        finally:
            self.idling.clear()
        client.idle_done()


def is_bye(response: Any) -> bool:
    return isinstance(response, tuple) and bool(response) and response[0] == b"BYE"


def is_news(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) > 1 and response[1] in (b"EXISTS", b"RECENT")


def close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


def start_poller(desk: Desk, wake: Callable[[], None]) -> Poller:
    """Read email.imap.folder in a thread of its own; returns an object with stop()."""
    return Poller(desk, wake).start()
