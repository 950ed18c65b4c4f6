"""Evidence files, content-addressed under `store.files`.

The customer's file name is only metadata: on disk a file is named by its sha256, so no name
a customer chooses (`../`, absolute paths, NUL, right-to-left overrides) can steer a write.
Writes go to a temporary file and are renamed into place, so a crash leaves no half file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import puremagic
import sqlite_utils

from .clock import stamp

MAX_FILENAME = 120


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_path(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def write_blob(root: str | Path, data: bytes, sha256: str | None = None) -> tuple[str, str]:
    """Store bytes by content; returns (sha256, path relative to root). Idempotent."""
    digest = sha256 or sha256_of(data)
    rel = relative_path(digest)
    target = Path(root) / rel
    if target.exists():
        return digest, rel
    if not target.parent.is_dir():  # a stat; mkdir on an existing folder costs ten times more
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest, rel


def read_blob(root: str | Path, sha256: str) -> bytes:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256")
    return (Path(root) / relative_path(sha256)).read_bytes()


def sniff_type(data: bytes, declared: str) -> str:
    """The type the bytes really are; the declared one only when the content says nothing."""
    try:
        matches = puremagic.magic_string(data[:8192])
    except (puremagic.PureError, ValueError):
        matches = []
    typed = [m for m in matches if m.mime_type]
    if typed and declared in {m.mime_type for m in typed if m.confidence == typed[0].confidence}:
        # The bytes fit several types equally (every zip also matches docx, xlsx, jar ...):
        # the declared one is among them, so it is no lie; the first would be a guess.
        return declared
    for match in matches:
        if match.mime_type:
            return match.mime_type
    return declared if declared == "text/plain" else "application/octet-stream"


def safe_filename(name: str | None, fallback: str) -> str:
    """A display name safe to show and to offer for download: no path, no controls, no bidi tricks."""
    name = (name or "").replace("\\", "/").split("/")[-1]
    cleaned = "".join(
        ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C" and ch not in '<>:"|?*'
    ).strip(" .")
    return (cleaned or fallback)[:MAX_FILENAME]


@dataclass(frozen=True)
class StoredFile:
    """A blob on disk and what its bytes are, before any database row refers to it."""

    sha256: str
    path: str
    size: int
    content_type: str


def store_file(root: str | Path, data: bytes, declared_type: str) -> StoredFile:
    """Write a blob and sniff its type. No database work: the pipeline does this before it
    takes the write lock (an fsync and puremagic were a third of the time it held the lock),
    and a crash before the commit leaves an orphan that the start-up sweep removes."""
    digest, rel = write_blob(root, data)
    return StoredFile(digest, rel, len(data), sniff_type(data[:8192], declared_type))


def attach(
    db: sqlite_utils.Database,
    root: str | Path,
    case_id: str,
    data: bytes | None,
    filename: str,
    declared_type: str,
    now: datetime,
    inbound_id: int | None = None,
    sha256: str | None = None,
    stored: StoredFile | None = None,
) -> dict[str, Any]:
    """Record a file as evidence of a case. `data` may be None when an adapter already wrote
    the blob (a Telegram download streamed to disk); then `sha256` names it. `stored` is the
    blob store_file() already wrote for `data`."""
    if data is not None:
        stored = stored or store_file(root, data, declared_type)
        digest, rel, size, content_type = stored.sha256, stored.path, stored.size, stored.content_type
    else:
        digest, rel = sha256 or "", relative_path(sha256 or "")
        blob = Path(root) / rel
        size = blob.stat().st_size
        with open(blob, "rb") as handle:
            content_type = sniff_type(handle.read(8192), declared_type)
    display = safe_filename(filename, f"evidence-{digest[:8]}")
    db.execute(
        "INSERT OR IGNORE INTO evidence "
        "(case_id, sha256, size, content_type, declared_type, filename, path, inbound_id, created_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        [case_id, digest, size, content_type, declared_type, display, rel, inbound_id, stamp(now)],
    )
    return {"filename": display, "content_type": content_type, "size": size, "sha256": digest}


def cases_with_file(db: sqlite_utils.Database, sha256: str, except_case: str) -> tuple[str, ...]:
    return tuple(
        r[0]
        for r in db.execute(
            "SELECT DISTINCT case_id FROM evidence WHERE sha256 = ? AND case_id != ? ORDER BY case_id",
            [sha256, except_case],
        )
    )


def referenced_paths(db: sqlite_utils.Database) -> set[str]:
    return {r[0] for r in db.execute("SELECT DISTINCT path FROM evidence")}


def remove_orphans(db: sqlite_utils.Database, root: str | Path) -> int:
    """Delete files no evidence row points to (left by a crash between write and commit)."""
    root = Path(root)
    if not root.exists():
        return 0
    keep = referenced_paths(db)
    removed = 0
    for path in root.glob("??/??/*"):
        rel = path.relative_to(root).as_posix()
        if rel not in keep and (path.name.startswith(".incoming-") or len(path.name) == 64):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
