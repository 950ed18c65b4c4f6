"""The desk's own addresses (refunds@ and appeals@), as the configuration names them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Addresses:
    refunds: str
    appeals: str

    def ours(self) -> tuple[str, str]:
        return (self.refunds.lower(), self.appeals.lower())
