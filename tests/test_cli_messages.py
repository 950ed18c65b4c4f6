"""What the `refunddesk` command says: where to mail and log in after `init` and `serve`, one line
for every user error (a port in use names its setting), and an empty list that says so and what
to look at instead. Real CLI throughout: the installed entry point in a subprocess where the
process matters (serve, init's configuration lookup), `refunddesk.cli.main` elsewhere."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import add_agents, base_settings, wait_for, write_config
from refunddesk.cli import main
from refunddesk.harness.driver import mail, mail_case, receive_mail
from refunddesk.review.agents import set_disabled
from refunddesk.store import cases as case_store
from refunddesk.store import events
from refunddesk.store.clock import utcnow
from serving import Served

from test_review_decisions import request_302ai, request_ipfixed

REFUNDDESK = Path(sys.executable).with_name("refunddesk")  # the installed entry point, as users run it


def cli(capsys, config: Path, *args: str) -> tuple[int, str, str]:
    try:
        code = main(["--config", str(config), *args])
    except SystemExit as exited:  # argparse's own exits (--help, a wrong argument)
        code = exited.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def taken_port() -> socket.socket:
    """A real listener on a free loopback port, as another program (or another serve) holds it."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


# --- ports in use ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["email.smtp_intake", "console"])
def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path, table):
    with taken_port() as holder:
        port = holder.getsockname()[1]
        config = write_config(tmp_path / "refunddesk.toml",
                              base_settings(tmp_path, **{f"{table}.enabled": True, f"{table}.port": port}))
        done = subprocess.run([str(REFUNDDESK), "--config", str(config), "serve"], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 1
    assert one_line(done.stderr) == f"refunddesk: 127.0.0.1:{port} is already in use ({table}.port in {config})"
    assert done.stdout == ""  # nothing said to be listening


def test_serve_says_where_to_mail_and_log_in_and_a_second_serve_is_refused(tmp_path):
    settings = base_settings(tmp_path, **{"email.smtp_intake.enabled": True, "console.enabled": True})
    smtp, console = settings["email.smtp_intake.port"], settings["console.port"]
    config = write_config(tmp_path / "refunddesk.toml", settings)
    served = Served(config, tmp_path / "serve.log").start(wait_ports=(smtp, console))
    try:
        wait_for(lambda: "no agent can log in" in served.output(), 30, message="serve's welcome lines")
        said = served.output()
        assert "customers write to refunds@desk.test (refunds) and appeals@desk.test (appeals)" in said
        assert f"received by SMTP on 127.0.0.1:{smtp}" in said
        assert f"agents' console: http://127.0.0.1:{console}/" in said
        assert f"`refunddesk --config {config} agents add NAME`" in said  # as serve was started
        assert "--password-stdin" in said and "10 characters" in said

        second = subprocess.run([str(REFUNDDESK), "--config", str(config), "serve"], capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1
        assert one_line(second.stderr) == (
            f"refunddesk: 127.0.0.1:{smtp} is already in use (email.smtp_intake.port in {config})"
        )
    finally:
        assert served.stop() == 0
    assert "Traceback" not in served.output()


# --- init --------------------------------------------------------------------------------------


def test_init_uses_refunddesk_config_and_says_what_to_do_next(tmp_path):
    elsewhere = tmp_path / "etc" / "desk.toml"
    here = tmp_path / "work"
    here.mkdir()
    env = {**os.environ, "REFUNDDESK_CONFIG": str(elsewhere)}

    done = subprocess.run([str(REFUNDDESK), "init"], cwd=here, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert elsewhere.exists() and not (here / "refunddesk.toml").exists()
    assert (tmp_path / "etc" / "var" / "refunddesk.db").exists() and not (here / "var").exists()
    said = done.stdout
    assert f"wrote {elsewhere}" in said
    assert "customers write to refunds@example.com (refunds) and appeals@example.com (appeals)" in said
    assert "received by SMTP on 127.0.0.1:2525" in said
    assert "agents' console: http://127.0.0.1:8025/" in said
    assert "add one with `refunddesk agents add NAME`" in said and "--password-stdin" in said
    assert "at least 10 characters" in said

    added = subprocess.run([str(REFUNDDESK), "agents", "add", "alice", "--password-stdin"], cwd=here, env=env,
                           input="correct horse\n", capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    again = subprocess.run([str(REFUNDDESK), "init"], cwd=here, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert f"using {elsewhere}" in again.stdout and "agents add" not in again.stdout


def test_init_with_config_names_it_in_the_commands_it_suggests(tmp_path, capsys):
    config = tmp_path / "desk one.toml"
    code, out, _ = cli(capsys, config, "init")
    assert code == 0 and config.exists()
    assert f"`refunddesk --config '{config}' agents add NAME`" in out
    assert f"start the desk with: refunddesk --config '{config}' serve" in out


# --- empty lists -------------------------------------------------------------------------------


def test_empty_dead_letters_and_queue_say_so(make_desk, tmp_path, capsys):
    desk = make_desk()
    config = tmp_path / "refunddesk.toml"
    assert cli(capsys, config, "deadletters", "list") == (0, "no dead letters\n", "")
    assert cli(capsys, config, "queue") == (
        0, "the queue is empty: no case waits for review, none waits for the customer\n", "")
    assert cli(capsys, config, "deadletters", "list", "--json")[1].strip() == "[]"
    assert desk.db_path.exists()


def test_an_empty_queue_counts_the_cases_still_with_the_customer(make_desk, tmp_path, capsys):
    desk = make_desk()
    db = desk.open_db()
    config = tmp_path / "refunddesk.toml"
    vague = receive_mail(desk, db, mail("vague@lumen.test", "refund", "Please refund me.", to=desk.addresses.refunds))
    assert case_store.load_case(db, vague).status == "collecting"

    code, out, _ = cli(capsys, config, "queue")
    assert code == 0
    assert out == ("the queue is empty: no case waits for review; 1 collecting "
                   "(still with the customer: `refunddesk queue --status collecting`)\n")
    code, out, _ = cli(capsys, config, "queue", "--status", "collecting")
    assert code == 0 and out.startswith(vague)
    assert cli(capsys, config, "queue", "--kind", "appeal") == (0, "no case matches\n", "")


# --- user errors -------------------------------------------------------------------------------


def test_export_with_a_date_in_another_form_names_yyyy_mm_dd(make_desk, tmp_path, capsys):
    make_desk()
    code, out, err = cli(capsys, tmp_path / "refunddesk.toml", "export", "--from", "12/01/2026", "--to", "2026-12-31")
    assert code == 1 and out == ""
    line = one_line(err)
    assert "'12/01/2026'" in line and "YYYY-MM-DD" in line


def test_cases_flag_without_a_flag_refuses_and_lists_the_flags(make_desk, tmp_path, capsys):
    desk = make_desk(**{"policy.preset": "ipfixed"})
    db = desk.open_db()
    add_agents(db, "alice")
    config = tmp_path / "refunddesk.toml"
    when = utcnow() - timedelta(hours=1)
    case_id = mail_case(desk, db, "mei@ip.test", request_ipfixed(when - timedelta(days=5), desk), when)

    def flags() -> list[str]:
        return [e["data"]["flags"] for e in events.for_case(db, case_id) if e["action"] == "special_consideration"]

    assert cli(capsys, config, "cases", "flag", case_id, "--special", "force_majeure", "--agent", "alice")[0] == 0
    assert flags() == [["force_majeure"]]
    code, out, err = cli(capsys, config, "cases", "flag", case_id, "--agent", "alice")
    line = one_line(err)
    assert code == 1 and out == ""
    assert "--special" in line and "--clear" in line and "force_majeure, system_upgrade" in line
    assert flags() == [["force_majeure"]]  # nothing was cleared

    code, out, _ = cli(capsys, config, "cases", "flag", case_id, "--clear", "--agent", "alice")
    assert code == 0 and out == f"{case_id}: special consideration: none\n"
    assert flags() == [["force_majeure"], []]


def test_decisions_are_taken_by_a_registered_enabled_agent(make_desk, tmp_path, capsys, monkeypatch):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, "alice", "bob")
    config = tmp_path / "refunddesk.toml"
    when = utcnow() - timedelta(hours=1)
    case_id = mail_case(desk, db, "jo@pixel.test", request_302ai(when - timedelta(days=1), desk), when)
    before = events.for_case(db, case_id)
    reject = ("cases", "reject", case_id, "--reason", "late")

    code, _, err = cli(capsys, config, *reject, "--agent", "mallory")
    assert code == 1 and "mallory is not a registered agent" in one_line(err)
    monkeypatch.delenv("REFUNDDESK_AGENT", raising=False)
    monkeypatch.setenv("LOGNAME", "root")  # what getpass.getuser() reads first
    code, _, err = cli(capsys, config, *reject)
    assert code == 1 and "root is not a registered agent" in one_line(err) and "--agent NAME" in err
    set_disabled(db, "bob", True, utcnow(), "test")
    code, _, err = cli(capsys, config, *reject, "--agent", "bob")
    assert code == 1 and "agent bob is disabled" in one_line(err)
    assert events.for_case(db, case_id) == before and case_store.load_case(db, case_id).status == "queued"

    monkeypatch.setenv("REFUNDDESK_AGENT", "Alice")  # the account's own spelling goes in the log
    code, out, _ = cli(capsys, config, *reject)
    assert code == 0 and out.startswith(f"{case_id} rejected by alice;")
    assert db.execute("SELECT decided_by FROM cases WHERE id = ?", [case_id]).fetchone()[0] == "alice"


def test_approve_reject_and_request_info_take_the_same_statuses(make_desk, tmp_path, capsys):
    """A request the customer never completed can be decided either way (it stays collecting
    until then); the cap still needs an amount on record."""
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, "alice")
    config = tmp_path / "refunddesk.toml"
    text = "Please refund me.\nAmount: 12.50 USD\n"
    ids = [receive_mail(desk, db, mail(f"c{n}@lumen.test", "refund", text, to=desk.addresses.refunds))
           for n in range(3)]
    assert [case_store.load_case(db, i).status for i in ids] == ["collecting"] * 3
    for case_id, decision in zip(ids, (("approve", "--amount", "12.50"), ("reject", "--reason", "incomplete"),
                                       ("request-info", "--message", "When were you charged?"))):
        code, _, err = cli(capsys, config, "cases", decision[0], case_id, *decision[1:], "--agent", "alice")
        assert code == 0, err
    assert [case_store.load_case(db, i).status for i in ids] == ["approved", "rejected", "awaiting_customer"]
    for verb, extra in (("approve", ("--amount", "1")), ("reject", ("--reason", "late")),
                        ("request-info", ("--message", "?"))):
        code, _, err = cli(capsys, config, "cases", verb, ids[0], *extra, "--agent", "alice")
        assert code == 1 and f"{ids[0]} was already decided (approved by alice)" in one_line(err)


@pytest.mark.parametrize("args", [
    ("cases", "show", "RF-999999"),
    ("cases", "show", "rf-999999", "--json"),
    ("queue", "--status", "bogus"),
    ("cases", "approve", "RF-000001"),
    ("export", "--from", "2026-13-01", "--to", "2026-01-01"),
    ("export", "--from", "2026-02-01", "--to", "2026-01-01"),
    ("deadletters", "retry", "seven"),
    ("deadletters", "retry", "7"),
    ("agents", "add", "-bad-", "--password-stdin"),
    ("frobnicate",),
])
def test_every_user_error_is_one_line(make_desk, tmp_path, capsys, monkeypatch, args):
    make_desk()
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    code, _, err = cli(capsys, tmp_path / "refunddesk.toml", *args)
    assert code == 1
    assert one_line(err).startswith("refunddesk")


def test_a_missing_configuration_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, tmp_path / "none.toml", "cases", "list")
    assert code == 1 and "no such configuration file (run `refunddesk init`" in one_line(err)
