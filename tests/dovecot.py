"""A real Dovecot IMAP server on loopback for the IMAP tests.

The fixture creates an unprivileged system user for the mailboxes if there is none (as root,
idempotently), writes a throw-away configuration under a temporary folder, and runs
`dovecot -F -c CONF`. Tests skip, saying why, only when the dovecot binary is not installed.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from imapclient import IMAPClient

from conftest import free_port, wait_for, wait_for_port

MAIL_USER = "imaptest"
USERNAME = "alice"
PASSWORD = "secret"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or next((p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.path.exists(p)), None)


def mail_user() -> tuple[int, int]:
    """uid and gid of the unprivileged owner of the test mailboxes, created if missing."""
    try:
        entry = pwd.getpwnam(MAIL_USER)
    except KeyError:
        if os.geteuid() != 0:
            # Without root there is no switching users: the mailboxes belong to whoever runs the tests.
            return os.getuid(), os.getgid()
        # A parallel test may create it at the same moment; useradd then exits 9 ("exists").
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_USER], check=False, capture_output=True)
        entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


class Dovecot:
    def __init__(self, capabilities: str = "") -> None:
        self.binary = dovecot_binary()
        self.port = free_port()
        self.capabilities = capabilities
        # Not under pytest's tmp_path: its folders are private to root, and the mail user must
        # reach its home.
        self.root = Path(tempfile.mkdtemp(prefix="refunddesk-dovecot-"))
        self.root.chmod(0o755)
        self.process: subprocess.Popen | None = None

    def configure(self) -> Path:
        uid, gid = mail_user()
        root = self.root
        (root / "mail").mkdir(exist_ok=True)
        os.chown(root / "mail", uid, gid)
        (root / "passwd").write_text(f"{USERNAME}:{{PLAIN}}{PASSWORD}::::::\n")
        (root / "passwd").chmod(0o644)
        lines = [
            f"base_dir = {root}/run",
            f"state_dir = {root}/state",
            f"log_path = {root}/dovecot.log",
            "protocols = imap",
            "listen = 127.0.0.1",
            "ssl = no",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            "mail_location = maildir:~/Maildir",
            f"first_valid_uid = {uid}",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {root}/passwd",
            "}",
            "userdb {",
            "  driver = static",
            f"  args = uid={uid} gid={gid} home={root}/mail/%u",
            "}",
            "namespace inbox {",
            "  inbox = yes",
            "  mailbox Processed {",
            "    auto = create",
            "  }",
            "}",
            "service imap-login {",
            "  inet_listener imap {",
            "    address = 127.0.0.1",
            f"    port = {self.port}",
            "  }",
            "  inet_listener imaps {",
            "    port = 0",
            "  }",
            "}",
        ]
        if self.capabilities:
            lines.append(f"imap_capability = {self.capabilities}")
        if os.geteuid() != 0:
            user = pwd.getpwuid(os.getuid()).pw_name
            lines += [f"default_login_user = {user}", f"default_internal_user = {user}", "service imap-login {", "  chroot =", "}", "service anvil {", "  chroot =", "}"]
        conf = root / "dovecot.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> "Dovecot":
        conf = self.configure()
        # A session of its own: stopping kills the imap children too, like a server crash would.
        self.process = subprocess.Popen([self.binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(self.port, timeout=15)
        except AssertionError:
            raise AssertionError(f"dovecot did not start:\n{self.log()}")
        return self

    def stop(self) -> None:
        """Kill the server and every connection it serves (its imap processes outlive a plain
        SIGTERM to the master for a while)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(15)
        self.process = None

    def kick(self, user: str = USERNAME) -> None:
        """The server ends the user's sessions (BYE, then close), as an admin or a failover does."""
        subprocess.run(["doveadm", "-c", str(self.root / "dovecot.conf"), "kick", user], check=True, capture_output=True, timeout=15)

    def restart(self) -> None:
        """Drop every connection the way a server restart does, and come back on the same port."""
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text("utf-8", "replace")[-3000:] if path.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=15)
        client.login(USERNAME, PASSWORD)
        return client

    def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> None:
        """Deliver a message into a folder, as the platform's MDA would."""
        with self.client() as client:
            client.append(folder, raw, flags=flags)

    def folder(self, name: str) -> dict[int, dict]:
        """uid -> {b"FLAGS": ..., b"BODY[]": ...} of every message in a folder (read-only)."""
        with self.client() as client:
            client.select_folder(name, readonly=True)
            uids = client.search("ALL")
            return client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]) if uids else {}

    def wait_for_count(self, name: str, count: int, timeout: float = 15) -> dict[int, dict]:
        found: dict[int, dict] = {}

        def counted() -> bool:
            found.clear()
            found.update(self.folder(name))
            return len(found) == count

        wait_for(counted, timeout, message=f"{count} message(s) in {name}")
        return found

    def settings(self, **overrides) -> dict:
        """Configuration keys that point refunddesk's poller at this server."""
        settings = {
            "email.imap.enabled": True,
            "email.imap.host": "127.0.0.1",
            "email.imap.port": self.port,
            "email.imap.tls": False,
            "email.imap.username": USERNAME,
            "email.imap.password": PASSWORD,
            "email.imap.poll_seconds": 1,
        }
        settings.update(overrides)
        return settings


def start_dovecot(capabilities: str = "") -> Dovecot:
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd); the IMAP tests need a real server")
    server = Dovecot(capabilities)
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


@pytest.fixture
def dovecot():
    server = start_dovecot()
    yield server
    server.cleanup()
