"""The case and message model shared by every channel and by the pure core.

Everything here is plain data: adapters build an `InboundMessage`, the dialog turns
(case, inbound, now) into a new case plus findings and replies, and the store persists them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

KINDS = ("refund", "appeal")
CHANNELS = ("email", "telegram")
# Public status names (the JSON contract of `cases list/show`): add, never rename.
STATUSES = ("collecting", "queued", "awaiting_customer", "approved", "rejected", "withdrawn")
OPEN_STATUSES = ("collecting", "queued", "awaiting_customer")
DECIDED_STATUSES = ("approved", "rejected")


@dataclass(frozen=True)
class Attachment:
    """One file a customer sent. `data` is present while in flight; the store keeps only metadata."""

    filename: str
    content_type: str
    size: int
    sha256: str
    data: bytes | None = None
    inline: bool = False

    def metadata(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class InboundMessage:
    """One customer message, normalized from any transport.

    conversation_key: what ties later messages of the same conversation together on this
      channel (a Telegram chat id, or for email the case id found by threading, if any).
    command: a channel-neutral intent when the transport had one (a button or a slash
      command): "refund", "appeal", "cancel", "status", "done_evidence", "confirm",
      "edit:<field>", "choose:<field>:<value>", "start", "help".
    """

    channel: str
    sender: str
    text: str
    received_at: datetime
    transport_id: str
    conversation_key: str = ""
    kind_hint: str | None = None
    subject: str = ""
    language: str | None = None
    attachments: tuple[Attachment, ...] = ()
    command: str | None = None
    display_name: str = ""
    case_ref: str | None = None
    auto_submitted: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """A rule's observation, citing the policy clause it rests on. Findings never act."""

    code: str
    clause: str
    message: str
    blocking: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            code=data["code"],
            clause=data["clause"],
            message=data["message"],
            blocking=bool(data.get("blocking", False)),
            params=dict(data.get("params") or {}),
        )


@dataclass(frozen=True)
class Reply:
    """A message the core wants sent: a template name and its context, never rendered text."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)
    kind: str = "dialog"  # ack | dialog | decision | reminder | notice
    buttons: tuple[tuple[str, str], ...] = ()  # (label, command) pairs for chat channels


@dataclass(frozen=True)
class Case:
    """A refund request or an appeal. `fields` holds what the customer told us, as strings."""

    id: str
    kind: str
    status: str
    channel: str
    contact: str
    language: str = "en"
    fields: dict[str, str] = field(default_factory=dict)
    attachments: tuple[dict[str, Any], ...] = ()
    findings: tuple[Finding, ...] = ()
    dialog: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    completed_at: datetime | None = None
    acknowledged_at: datetime | None = None
    review_due_at: datetime | None = None
    decided_at: datetime | None = None
    deadline_at: datetime | None = None
    parent_id: str | None = None
    conversation_key: str = ""
    policy_version: str = ""

    def evolve(self, **changes: Any) -> Case:
        return replace(self, **changes)

    def with_fields(self, **values: str) -> Case:
        merged = dict(self.fields)
        merged.update({k: v for k, v in values.items() if v is not None})
        return replace(self, fields=merged)


def read_choices(case: Case) -> dict[str, dict[str, Any]]:
    """The reader's choices that still stand: the field holds the value it chose. Here, not in
    dialog.py, so that showing a case does not load the reader."""
    return {
        name: choice
        for name, choice in case.dialog.get("read_choices", {}).items()
        if case.fields.get(name) == choice["value"]
    }


@dataclass(frozen=True)
class StepResult:
    case: Case
    findings: tuple[Finding, ...]
    replies: tuple[Reply, ...]
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
