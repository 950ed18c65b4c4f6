"""The running desk: configuration turned into the policy, the calendar and the store's paths."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from refunddesk.addresses import Addresses
from refunddesk.config import Config
from refunddesk.policy.calendar import WorkingCalendar
from refunddesk.policy.preset import Policy, load_policy_file, load_preset
from refunddesk.store.db import open_db

log = logging.getLogger("refunddesk")


@dataclass
class Desk:
    config: Config
    policy: Policy
    calendar: WorkingCalendar
    db_path: Path
    files: Path
    addresses: Addresses

    @classmethod
    def from_config(cls, config: Config) -> Desk:
        chosen = config.policy
        policy = load_policy_file(chosen.file) if chosen.file else load_preset(chosen.preset)
        if chosen.calendar_overrides:
            calendar = WorkingCalendar.from_override_file(chosen.calendar_overrides, policy.country)
        else:
            calendar = WorkingCalendar(policy.country)
        return cls(
            config=config,
            policy=policy,
            calendar=calendar,
            db_path=config.store.path,
            files=config.store.files,
            addresses=Addresses(config.email.refunds_address.lower(), config.email.appeals_address.lower()),
        )

    def open_db(self, durable: bool = True) -> sqlite_utils.Database:
        return open_db(self.db_path, durable=durable)

    @property
    def mail_domain(self) -> str:
        return self.addresses.refunds.split("@", 1)[1]
