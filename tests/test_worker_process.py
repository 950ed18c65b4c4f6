"""The worker runs in a process of its own: it is supervised, and it never outlives serve.

Real `refunddesk serve` in a subprocess, real SMTP to it, a recording relay for the answers.
"""
from __future__ import annotations

import os
import signal

from conftest import wait_for
from mail_fixtures import REFUNDS, desk_from, letter, mail_settings, relay, send  # noqa: F401 (fixture)
from processes import process_tree
from serving import Served

REQUEST = "The API froze and I was charged 12.50 USD on 2026-11-20 10:00, account acme-7.\n"


def start_serve(tmp_path, relay) -> tuple[Served, int]:
    settings = mail_settings(tmp_path, relay)
    _, config = desk_from(tmp_path, settings)
    port = settings["email.smtp_intake.port"]
    return Served(config, tmp_path / "serve.log").start(wait_ports=(port,)), port


def worker_of(served: Served) -> int:
    """The worker's pid: serve's child running `python -m refunddesk.worker`."""
    def found() -> int | None:
        for pid in process_tree(served.process.pid)[1:]:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"refunddesk.worker" in handle.read():
                    return pid
        return None

    return wait_for(found, 20, message="the worker process")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between it and the read
        return False


def test_a_worker_that_dies_is_restarted_and_the_mail_spooled_meanwhile_is_answered(tmp_path, relay):
    served, port = start_serve(tmp_path, relay)
    try:
        first = worker_of(served)
        os.kill(first, signal.SIGKILL)  # as the OOM killer would
        customer = "after-crash@customer.test"
        assert send(port, letter(customer, "Refund", REQUEST), customer, REFUNDS) == {}  # intake goes on
        (ack,) = relay.wait_for(customer, timeout=30)
        assert "[RF-" in ack["Subject"]
        assert worker_of(served) != first
        assert "the worker ended unexpectedly (exit code -9)" in served.output()
    finally:
        assert served.stop() == 0, served.output()[-3000:]


def test_kill_9_of_serve_leaves_no_worker_behind(tmp_path, relay):
    served, _ = start_serve(tmp_path, relay)
    worker = worker_of(served)
    children = process_tree(served.process.pid)[1:]
    served.stop(signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in children), 10, message="serve's children to end with it")
    assert not alive(worker)


def test_sigterm_to_the_whole_process_group_stops_serve_cleanly(tmp_path, relay):
    """A service manager signals every process of the service at once: the worker must not
    be cut mid-message or left waiting; serve stops everything and exits 0."""
    served, port = start_serve(tmp_path, relay)
    worker = worker_of(served)
    customer = "group-stop@customer.test"
    send(port, letter(customer, "Refund", REQUEST), customer, REFUNDS)
    relay.wait_for(customer)
    os.kill(worker, signal.SIGTERM)  # what the group signal does to the worker, first
    assert served.stop(signal.SIGTERM) == 0
    assert "stopped" in served.output()
    assert not alive(worker)


def test_a_restarted_worker_leaves_files_in_flight_alone_and_the_next_start_sweeps_them(tmp_path, relay):
    """The start-up sweep deletes files no case refers to. Once the Telegram bot runs, such a
    file may be a download whose update is about to be spooled: only a service's first worker
    sweeps, a worker restarted beside a running bot does not."""
    served, port = start_serve(tmp_path, relay)
    first_customer, second_customer = "first@customer.test", "second@customer.test"
    send(port, letter(first_customer, "Refund", REQUEST), first_customer, REFUNDS)
    relay.wait_for(first_customer)  # the first worker has swept (it sweeps before it reads mail)
    in_flight = tmp_path / "files" / "ab" / "cd" / ("abcd" + "0" * 60)
    in_flight.parent.mkdir(parents=True, exist_ok=True)
    in_flight.write_bytes(b"a download whose update is not spooled yet")
    os.kill(worker_of(served), signal.SIGKILL)
    send(port, letter(second_customer, "Refund", REQUEST), second_customer, REFUNDS)
    relay.wait_for(second_customer, timeout=30)  # answered by the restarted worker
    assert in_flight.exists()
    assert served.stop() == 0
    restarted, _ = start_serve(tmp_path, relay)
    try:
        wait_for(lambda: not in_flight.exists(), 20, message="the next service's first worker to sweep")
        assert "removed 1 evidence files no case refers to" in restarted.output()
    finally:
        restarted.stop()


def test_a_message_that_keeps_killing_the_worker_becomes_a_dead_letter_and_the_rest_goes_on(tmp_path, relay):
    """Each time the worker holds one message, it dies (as a crash in C code or the OOM killer
    would make it): the third death makes that message a dead letter, and mail after it is
    answered. Its innocent neighbours are not counted against."""
    import json

    from refunddesk.store import spool
    from refunddesk.store.clock import utcnow

    settings = mail_settings(tmp_path, relay)
    desk, config = desk_from(tmp_path, settings)
    db = desk.open_db()
    # Large enough that parsing it takes a moment: the worker is killed while it holds it.
    screenshot = bytes(range(256)) * 40_000  # ~10 MB
    poison = letter("poison@customer.test", "Refund", REQUEST, files=(("shot.bin", screenshot, "application/octet-stream"),))
    bad_id, _ = spool.spool(db, "email", "test:poison", poison, utcnow(), {"mail_from": "poison@customer.test"})
    in_hand = tmp_path / "refunddesk.db-inhand"
    served = Served(config, tmp_path / "serve.log").start(wait_ports=(settings["email.smtp_intake.port"],))
    try:
        for death in range(3):
            def holding_it() -> int | None:
                try:
                    state = json.loads(in_hand.read_text() or "{}")
                except (OSError, ValueError):
                    return None
                return state["worker"] if bad_id in state.get("holding", []) and alive(state["worker"]) else None

            worker = wait_for(holding_it, 30, interval=0.001, message=f"a worker holding the message (death {death + 1})")
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: not alive(worker), 10, message="the worker to die")
        customer = "after-poison@customer.test"
        send(settings["email.smtp_intake.port"], letter(customer, "Refund", REQUEST), customer, REFUNDS)
        relay.wait_for(customer, timeout=60)  # the fourth worker goes on past it
        status, error = db.execute("SELECT status, error FROM inbound WHERE id = ?", [bad_id]).fetchone()
        assert status == "dead" and "the worker died 3 times" in error
        assert "took 3 workers down with it; kept as a dead letter" in served.output()
    finally:
        assert served.stop() == 0, served.output()[-3000:]
