"""The store's schema as ordered migrations. Never edit an applied migration: add a new one."""

from __future__ import annotations

import logging

from sqlite_utils.migrations import Migrations

log = logging.getLogger("refunddesk.store")
MIGRATIONS = Migrations("refunddesk")


@MIGRATIONS()
def m001_initial(db):
    db.execute(
        """
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
        """
    )
    db.execute(
        """
        CREATE TABLE inbound (
            id INTEGER PRIMARY KEY,
            channel TEXT NOT NULL,
            transport_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            raw BLOB NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            dedup_key TEXT,
            case_id TEXT,
            processed_at TEXT,
            UNIQUE (channel, transport_id)
        )
        """
    )
    db.execute("CREATE INDEX inbound_status ON inbound (status, id)")
    db.execute("CREATE INDEX inbound_dedup ON inbound (dedup_key)")
    db.execute(
        """
        CREATE TABLE cases (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            channel TEXT NOT NULL,
            contact TEXT NOT NULL,
            language TEXT NOT NULL DEFAULT 'en',
            amount TEXT,
            currency TEXT,
            description TEXT,
            fields TEXT NOT NULL DEFAULT '{}',
            attachments TEXT NOT NULL DEFAULT '[]',
            findings TEXT NOT NULL DEFAULT '[]',
            dialog TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            completed_at TEXT,
            acknowledged_at TEXT,
            review_due_at TEXT,
            deadline_at TEXT,
            decided_at TEXT,
            decided_by TEXT,
            parent_id TEXT REFERENCES cases(id),
            conversation_key TEXT NOT NULL DEFAULT '',
            policy_version TEXT NOT NULL DEFAULT '',
            agent_flags TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute("CREATE INDEX cases_queue ON cases (status, review_due_at)")
    db.execute("CREATE INDEX cases_contact ON cases (contact, created_at)")
    db.execute("CREATE INDEX cases_conversation ON cases (channel, conversation_key, status)")
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            case_id TEXT REFERENCES cases(id),
            direction TEXT NOT NULL,
            channel TEXT NOT NULL,
            at TEXT NOT NULL,
            sender TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL DEFAULT '',
            html TEXT,
            inbound_id INTEGER REFERENCES inbound(id),
            outbox_id INTEGER,
            meta TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute("CREATE INDEX messages_case ON messages (case_id, at)")
    db.execute(
        """
        CREATE TABLE evidence (
            id INTEGER PRIMARY KEY,
            case_id TEXT NOT NULL REFERENCES cases(id),
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            declared_type TEXT NOT NULL DEFAULT '',
            filename TEXT NOT NULL,
            path TEXT NOT NULL,
            inbound_id INTEGER,
            created_at TEXT NOT NULL,
            UNIQUE (case_id, sha256)
        )
        """
    )
    db.execute("CREATE INDEX evidence_sha ON evidence (sha256)")
    db.execute(
        """
        CREATE TABLE message_ids (
            message_id TEXT PRIMARY KEY,
            case_id TEXT NOT NULL REFERENCES cases(id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            case_id TEXT REFERENCES cases(id),
            channel TEXT NOT NULL,
            recipient TEXT NOT NULL,
            kind TEXT NOT NULL,
            template TEXT NOT NULL,
            language TEXT NOT NULL,
            subject TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL,
            buttons TEXT NOT NULL DEFAULT '[]',
            headers TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            next_attempt_at TEXT NOT NULL,
            sent_at TEXT,
            last_error TEXT,
            escalated_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX outbox_due ON outbox (status, next_attempt_at)")
    db.execute("CREATE INDEX outbox_recipient ON outbox (recipient, created_at)")
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            case_id TEXT,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute("CREATE INDEX events_case ON events (case_id, id)")
    # The audit log is append-only: the database itself refuses edits and deletions.
    db.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN "
        "SELECT RAISE(ABORT, 'the event log is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN "
        "SELECT RAISE(ABORT, 'the event log is append-only'); END"
    )
    db.execute(
        """
        CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        )
        """
    )


@MIGRATIONS()
def m002_review_search_retention(db):
    """Agents' review: full-text search (trigram, so Chinese works), decision details, retention."""
    # Trigram FTS5 indexes kept in step with their tables by triggers; external content, so the
    # text is stored once. Terms under 3 characters fall back to LIKE in review/queue.py.
    db.execute(
        "CREATE VIRTUAL TABLE cases_fts USING fts5(id, contact, description, "
        "content='cases', content_rowid='rowid', tokenize='trigram')"
    )
    db.execute(
        "CREATE TRIGGER cases_fts_insert AFTER INSERT ON cases BEGIN "
        "INSERT INTO cases_fts (rowid, id, contact, description) "
        "VALUES (new.rowid, new.id, new.contact, new.description); END"
    )
    db.execute(
        "CREATE TRIGGER cases_fts_update AFTER UPDATE OF id, contact, description ON cases BEGIN "
        "INSERT INTO cases_fts (cases_fts, rowid, id, contact, description) "
        "VALUES ('delete', old.rowid, old.id, old.contact, old.description); "
        "INSERT INTO cases_fts (rowid, id, contact, description) "
        "VALUES (new.rowid, new.id, new.contact, new.description); END"
    )
    db.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(subject, text, "
        "content='messages', content_rowid='id', tokenize='trigram')"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
        "INSERT INTO messages_fts (rowid, subject, text) VALUES (new.id, new.subject, new.text); END"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, text ON messages BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, subject, text) "
        "VALUES ('delete', old.id, old.subject, old.text); "
        "INSERT INTO messages_fts (rowid, subject, text) VALUES (new.id, new.subject, new.text); END"
    )
    for table, fts, key, columns in (
        ("cases", "cases_fts", "rowid", "id, contact, description"),
        ("messages", "messages_fts", "id", "subject, text"),
    ):
        old_values = ", ".join(f"old.{c.strip()}" for c in columns.split(","))
        db.execute(
            f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} BEGIN "
            f"INSERT INTO {fts} ({fts}, rowid, {columns}) VALUES ('delete', old.{key}, {old_values}); END"
        )
    db.execute("INSERT INTO cases_fts (cases_fts) VALUES ('rebuild')")
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    # What an agent decided (amount, reason, note), for statements; the event log keeps the history.
    db.execute("ALTER TABLE cases ADD COLUMN decided_amount TEXT")
    db.execute("ALTER TABLE cases ADD COLUMN decision TEXT NOT NULL DEFAULT '{}'")
    db.execute("CREATE INDEX cases_decided ON cases (status, decided_at)")
    # PIF-10: records are kept at least 7 years, so the database refuses to delete younger ones.
    # Stamps are ISO 8601 UTC text ('T' separator), compared as text against the same format.
    for table, column in (
        ("cases", "created_at"),
        ("messages", "at"),
        ("evidence", "created_at"),
        ("outbox", "created_at"),
        ("inbound", "received_at"),
    ):
        db.execute(
            f"CREATE TRIGGER {table}_retention BEFORE DELETE ON {table} "
            f"WHEN old.{column} > strftime('%Y-%m-%dT%H:%M:%S', 'now', '-7 years') "
            f"BEGIN SELECT RAISE(ABORT, 'records are kept for 7 years (PIF-10); nothing is deleted before then'); END"
        )


@MIGRATIONS()
def m003_imap_watermarks(db):
    """IMAP: the highest UID stored per mailbox, valid for one UIDVALIDITY (reset when it changes)."""
    db.execute(
        """
        CREATE TABLE imap_watermarks (
            account TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            last_uid INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (account, mailbox)
        )
        """
    )


@MIGRATIONS()
def m004_queue_order(db):
    """The agents' queue order (review/queue.py ORDER) as indexes, per status and over all
    cases: a page of the queue is then read in order, not sorted from every matching case
    (bench/queue_scale.py: 1,000,000 cases)."""
    db.execute("CREATE INDEX cases_queue_order ON cases (status, review_due_at IS NULL, review_due_at, created_at, id)")
    db.execute("CREATE INDEX cases_order ON cases (review_due_at IS NULL, review_due_at, created_at, id)")


@MIGRATIONS()
def m005_search_index_on_change(db):
    """Re-index a case for search only when its indexed text changed. The pipeline saves a case
    with an upsert that names every column, and "UPDATE OF" fires for any column named: the
    trigram index of the description was deleted and written again at every step of every
    dialog (py-spy of bench/telegram.py: the case save was the worker's slowest statement)."""
    db.execute("DROP TRIGGER cases_fts_update")
    db.execute(
        "CREATE TRIGGER cases_fts_update AFTER UPDATE OF id, contact, description ON cases "
        "WHEN old.id IS NOT new.id OR old.contact IS NOT new.contact OR old.description IS NOT new.description BEGIN "
        "INSERT INTO cases_fts (cases_fts, rowid, id, contact, description) "
        "VALUES ('delete', old.rowid, old.id, old.contact, old.description); "
        "INSERT INTO cases_fts (rowid, id, contact, description) "
        "VALUES (new.rowid, new.id, new.contact, new.description); END"
    )


@MIGRATIONS()
def m006_inbound_conversation(db):
    """Which conversation a spooled row belongs to (a Telegram chat), so that with several
    workers (worker.processes) one chat's updates are all taken by one worker, in order.
    The index covers what a worker asks for its share of the spool: the rows' `raw` comes
    before these columns, and reading past it would walk a large mail's overflow pages."""
    db.execute("ALTER TABLE inbound ADD COLUMN conversation INTEGER")
    db.execute("CREATE INDEX inbound_lanes ON inbound (status, id, conversation)")


@MIGRATIONS()
def m007_search_customers_words_only(db):
    """Index only the customers' messages for search. Search reads no other (review/queue.py:
    our letters' boilerplate would match every case), yet each acknowledgement was
    trigram-indexed as it was written: about 6 % of the worker's time per mail, and half the
    index. The index now reads a view of the inbound messages, so 'rebuild' and
    'integrity-check' agree with it. On a large store this rebuilds the index once."""
    for trigger in ("messages_fts_insert", "messages_fts_update", "messages_fts_delete"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP TABLE messages_fts")
    db.execute("CREATE VIEW messages_in AS SELECT id, subject, text FROM messages WHERE direction = 'in'")
    db.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(subject, text, "
        "content='messages_in', content_rowid='id', tokenize='trigram')"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.direction = 'in' BEGIN "
        "INSERT INTO messages_fts (rowid, subject, text) VALUES (new.id, new.subject, new.text); END"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, text, direction ON messages "
        "WHEN old.subject IS NOT new.subject OR old.text IS NOT new.text OR old.direction IS NOT new.direction BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, subject, text) "
        "SELECT 'delete', old.id, old.subject, old.text WHERE old.direction = 'in'; "
        "INSERT INTO messages_fts (rowid, subject, text) "
        "SELECT new.id, new.subject, new.text WHERE new.direction = 'in'; END"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.direction = 'in' BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, subject, text) "
        "VALUES ('delete', old.id, old.subject, old.text); END"
    )
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


@MIGRATIONS(transactional=False)
def m008_spool_raw_last(db):
    """The spool's raw bytes as the last column of its rows. A large message is inserted as a
    zero blob and written in place (store/spool.py); SQLite leaves a zero blob unexpanded only
    when it ends the row. With columns after it, the receiver built every 28 MB row in full
    first: ~28 MB of its peak during a burst of large mails (bench/memory.py: 141 -> 114 MB).

    The table is rebuilt, as SQLite's ALTER TABLE cannot move a column: with foreign keys off
    (the messages refer to it), which needs to be outside a transaction, so this step
    manages its own and is a no-op once done. On a large spool it copies every raw message once,
    holding the write lock meanwhile (an MTA pipe then answers "try again later", and its MTA
    does), and needs free disk for a second copy of the spool; the first copy's pages are
    reused by later mail, and the write-ahead log is truncated after."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(inbound)")]
    if columns[-1] == "raw":
        return
    conn = db.conn
    if conn.in_transaction:
        raise RuntimeError("m008 rebuilds the spool table and must start outside a transaction")
    if conn.execute("SELECT 1 FROM inbound LIMIT 1").fetchone():  # a new store has nothing to copy: nothing to say
        log.info(
            "rebuilding the spool table once (its raw bytes move to the end of each row); "
            "on a large spool this takes a while and needs free disk for a second copy of it"
        )
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            dependents = [
                sql
                for (sql,) in conn.execute(
                    "SELECT sql FROM sqlite_master "
                    "WHERE tbl_name = 'inbound' AND type IN ('index', 'trigger') AND sql IS NOT NULL"
                )
            ]
            conn.execute(
                """
                CREATE TABLE inbound_rebuilt (
                    id INTEGER PRIMARY KEY,
                    channel TEXT NOT NULL,
                    transport_id TEXT NOT NULL,
                    received_at TEXT NOT NULL,
                    meta TEXT NOT NULL DEFAULT '{}',
                    status TEXT NOT NULL DEFAULT 'pending',
                    attempts INTEGER NOT NULL DEFAULT 0,
                    error TEXT,
                    dedup_key TEXT,
                    case_id TEXT,
                    processed_at TEXT,
                    conversation INTEGER,
                    raw BLOB NOT NULL,
                    UNIQUE (channel, transport_id)
                )
                """
            )
            kept = ", ".join(c for c in columns if c != "raw")
            conn.execute(f"INSERT INTO inbound_rebuilt ({kept}, raw) SELECT {kept}, raw FROM inbound")
            conn.execute("DROP TABLE inbound")
            conn.execute("ALTER TABLE inbound_rebuilt RENAME TO inbound")
            for sql in dependents:
                conn.execute(sql)
            broken = conn.execute(
                "PRAGMA foreign_key_check(messages)"
            ).fetchall()  # the one table that refers to the spool
            if broken:
                raise RuntimeError(f"the spool rebuild would break references: {broken[:5]}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copy passed through the log: give its space back


SEARCHED_CHARS = 65_536  # of each customer message, the part search indexes


@MIGRATIONS()
def m009_search_reads_the_first_64k(db):
    """Search indexes the first 64 K characters of a customer's message, not all of it: a
    10 MB plain mail cost the worker 0.4 s of trigram indexing alone, for text no agent
    searches (a pasted log). The message itself is kept whole. On a large store this
    rebuilds the index once."""
    for trigger in ("messages_fts_insert", "messages_fts_update", "messages_fts_delete"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP VIEW messages_in")
    n = SEARCHED_CHARS
    db.execute(
        f"CREATE VIEW messages_in AS SELECT id, subject, substr(text, 1, {n}) AS text "
        "FROM messages WHERE direction = 'in'"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.direction = 'in' BEGIN "
        f"INSERT INTO messages_fts (rowid, subject, text) VALUES (new.id, new.subject, substr(new.text, 1, {n})); END"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, text, direction ON messages "
        "WHEN old.subject IS NOT new.subject OR old.text IS NOT new.text OR old.direction IS NOT new.direction BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, subject, text) "
        f"SELECT 'delete', old.id, old.subject, substr(old.text, 1, {n}) WHERE old.direction = 'in'; "
        f"INSERT INTO messages_fts (rowid, subject, text) SELECT new.id, new.subject, substr(new.text, 1, {n}) "
        "WHERE new.direction = 'in'; END"
    )
    db.execute(
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.direction = 'in' BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, subject, text) "
        f"VALUES ('delete', old.id, old.subject, substr(old.text, 1, {n})); END"
    )
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


@MIGRATIONS()
def m010_console_sessions(db):
    """The console's sessions, kept in the store: a signed cookie alone stayed valid for its
    8 hours after logout, wherever it had been copied. A session row is revoked at logout."""
    db.execute(
        "CREATE TABLE console_sessions "
        "(id TEXT PRIMARY KEY, agent TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)"
    )
    db.execute("CREATE INDEX console_sessions_agent ON console_sessions (agent, revoked_at)")
