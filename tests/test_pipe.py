"""The MTA pipe (`refunddesk deliver`) and the JSON contract of `cases list/show`."""
from __future__ import annotations

import io
import json
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import CORPUS_MAILS, base_settings, run_cli, write_config
from refunddesk import cli

PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
CASE_KEYS = {
    "id", "kind", "status", "channel", "contact", "amount", "currency", "incident_at", "description",
    "attachments", "findings", "created_at", "acknowledged_at", "review_due_at", "parent_id",
}


def request_mail(body: str, *, attach: bool = True, to: str = "refunds@desk.test", subject: str = "Refund request") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(body))}@example.com>"
    msg.set_content(body)
    if attach:
        msg.add_attachment(PNG, maintype="image", subtype="png", filename="charge.png")
    return msg.as_bytes()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "refunddesk.toml", base_settings(tmp_path))


def deliver_in_process(config: Path, raw: bytes, capsys) -> str:
    """The real `deliver` command function, with the message on its standard input."""
    stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(raw))
    try:
        code = cli.main(["--config", str(config), "deliver"])
    finally:
        sys.stdin = stdin
    out = capsys.readouterr().out.strip()
    assert code == 0, out
    return out


def test_deliver_then_show_gives_the_case_with_fields_findings_and_the_acknowledgement_waiting(config):
    raw = request_mail(
        "The model froze and I got no result, PTC was deducted.\nAmount: 12.50 USD\n"
        "Time of the charge: 2026-11-20 10:00\nAccount ID: u_88213\nPaid credit from my top-up."
    )
    delivered = run_cli(config, "deliver", stdin=raw)
    assert delivered.returncode == 0, delivered.stderr
    case_id = delivered.stdout.decode().strip()
    assert case_id.startswith("RF-")
    shown = run_cli(config, "cases", "show", case_id, "--json")
    data = json.loads(shown.stdout)
    assert CASE_KEYS | {"messages"} <= set(data)
    assert data["kind"] == "refund" and data["channel"] == "email"
    assert data["contact"] == "alice@example.com"
    assert data["amount"] == "12.50" and data["currency"] == "USD"
    assert data["incident_at"] == "2026-11-20T10:00:00+08:00"
    assert data["attachments"] == [{"filename": "charge.png", "content_type": "image/png", "size": len(PNG), "sha256": data["attachments"][0]["sha256"]}]
    assert all({"code", "clause", "message", "blocking"} <= set(f) for f in data["findings"])
    assert data["messages"][0]["direction"] == "in"
    assert [o["template"] for o in data["outbox"]] == ["ack"]
    assert data["outbox"][0]["status"] == "pending"
    assert data["acknowledged_at"] is None


def test_cases_list_json_filters_by_status_and_kind(config, capsys):
    complete = deliver_in_process(config, request_mail("Charged twice for $5 on 2026-11-20 10:00, account u_1. Paid credit from my top-up."), capsys)
    partial = deliver_in_process(config, request_mail("Please refund me.", attach=False), capsys)
    listed = json.loads(run_cli(config, "cases", "list", "--json").stdout)
    assert {c["id"] for c in listed} == {complete, partial}
    assert all(CASE_KEYS <= set(c) for c in listed)
    collecting = json.loads(run_cli(config, "cases", "list", "--status", "collecting", "--json").stdout)
    assert [c["id"] for c in collecting] == [partial]
    appeals = json.loads(run_cli(config, "cases", "list", "--kind", "appeal", "--json").stdout)
    assert appeals == []


def test_deliver_exits_75_when_the_store_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store folder should be")
    config = write_config(tmp_path / "refunddesk.toml", base_settings(tmp_path, **{"store.path": str(blocker / "db.sqlite")}))
    result = run_cli(config, "deliver", stdin=request_mail("Refund please"))
    assert result.returncode == 75
    assert b"temporary failure" in result.stderr


def test_every_corpus_mail_becomes_a_case_or_a_dead_letter_and_none_crashes(config, capsys):
    files = CORPUS_MAILS
    assert len(files) > 100
    for path in files:
        deliver_in_process(config, path.read_bytes(), capsys)
    from refunddesk.config import load
    from refunddesk.desk import Desk

    db = Desk.from_config(load(config, environ={})).open_db()
    rows = list(db.query("SELECT status, case_id, raw FROM inbound ORDER BY id"))
    assert len(rows) == len(files)
    assert all(r["status"] in ("done", "duplicate", "dead") for r in rows)
    assert [r["raw"] for r in rows] == [p.read_bytes() for p in files]
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) >= len(files) * 0.8, f"only {len(done)} of {len(files)} became cases"
    dead = json.loads(run_cli(config, "deadletters", "list", "--json").stdout)
    assert len(dead) == sum(r["status"] == "dead" for r in rows)
