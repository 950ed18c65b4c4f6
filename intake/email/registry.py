"""One header registry for every message we read or write, which makes each header class once.

The standard library's HeaderRegistry builds a new class (`type(...)`) every time a header is
parsed or set. Composing one acknowledgement set ~10 headers, and that class building was a
seventh of the senders' CPU during a burst (py-spy, bench/smtp_intake.py). The classes it
builds for one header name are all alike, so one per name is kept.
"""

from __future__ import annotations

import email.headerregistry
import email.policy


class HeaderClasses(email.headerregistry.HeaderRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self.made.get(key)
        if made is None:
            made = self.made[key] = super().__getitem__(name)
        return made

    def map_to_type(self, name: str, cls: type) -> None:
        super().map_to_type(name, cls)
        self.made.pop(name.lower(), None)


REGISTRY = HeaderClasses()
WRITING = email.policy.default.clone(header_factory=REGISTRY)  # the policy of the letters we compose
WRITING_UTF8 = WRITING.clone(utf8=True)  # ... to an internationalised address (RFC 6532)
