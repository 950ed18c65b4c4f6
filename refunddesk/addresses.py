"""The desk's own addresses (refunds@ and appeals@), as the configuration names them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Addresses:
    refunds: str
    appeals: str

    def ours(self) -> tuple[str, str]:
        return (self.refunds.lower(), self.appeals.lower())


def endpoint(host: str, port: int) -> str:
    """host:port as a user types it; an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
