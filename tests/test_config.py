"""Configuration: the public key names, validation messages, secrets from the environment."""
from __future__ import annotations

from pathlib import Path

import pytest

from refunddesk.config import ConfigError, load, validate

REPO = Path(__file__).resolve().parents[1]

PUBLIC_KEYS = [
    "store.path", "store.files", "worker.processes", "worker.message_seconds", "policy.preset", "policy.file",
    "email.refunds_address", "email.appeals_address",
    "email.smtp_intake.enabled", "email.smtp_intake.host", "email.smtp_intake.port", "email.smtp_intake.max_message_bytes",
    "email.imap.enabled", "email.imap.host", "email.imap.port", "email.imap.tls", "email.imap.username",
    "email.imap.password", "email.imap.folder", "email.imap.processed_folder",
    "email.outgoing.host", "email.outgoing.port", "email.outgoing.starttls", "email.outgoing.username", "email.outgoing.password",
    "telegram.enabled", "telegram.token", "telegram.api_url",
    "console.enabled", "console.host", "console.port",
]


def test_example_config_runs_as_is_and_documents_every_public_key():
    config = load(REPO / "config.example.toml", environ={})
    text = (REPO / "config.example.toml").read_text()
    for key in PUBLIC_KEYS:
        assert config.get(key) is not None or key in ("policy.file",), key
        assert key.rsplit(".", 1)[1] in text, f"{key} is not documented in config.example.toml"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"email": {"refunds_address": "r@x.test"}}, "missing key 'email.appeals_address'"),
        ({"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test"}, "store": {"pathh": "x"}}, "unknown key 'store.pathh'"),
        ({"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test", "smtp_intake": {"port": "25"}}}, "'email.smtp_intake.port' must be int"),
        ({"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test", "smtp_intake": {"port": True}}}, "'email.smtp_intake.port' must be int"),
        ({"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test"}, "policy": {"preset": "acme"}}, "'policy.preset' must be one of"),
        ({"email": {"refunds_address": "r@x.test\r\nBcc: e@x", "appeals_address": "a@x.test"}}, "plain email address"),
        ({"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test"}, "telegram": {"enabled": True}}, "telegram.token"),
    ],
)
def test_a_wrong_or_missing_key_is_named(raw, message):
    with pytest.raises(ConfigError) as error:
        validate(raw, "test.toml", environ={})
    assert message in str(error.value)
    assert "test.toml" in str(error.value)


def test_secrets_come_from_the_environment_and_never_show_in_repr():
    raw = {"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test"}, "telegram": {"enabled": True}}
    config = validate(raw, "test.toml", environ={"REFUNDDESK_TELEGRAM_TOKEN": "123:SECRET-TOKEN"})
    assert config["telegram.token"] == "123:SECRET-TOKEN"
    assert "SECRET-TOKEN" not in repr(config)


def test_config_file_is_chosen_by_environment_variable(tmp_path):
    path = tmp_path / "chosen.toml"
    path.write_text('[email]\nrefunds_address = "r@x.test"\nappeals_address = "a@x.test"\n')
    config = load(None, environ={"REFUNDDESK_CONFIG": str(path)})
    assert config.source == str(path)
    assert config.path("store.path") == tmp_path / "var" / "refunddesk.db"


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="refunddesk init"):
        load(tmp_path / "nope.toml", environ={})


MINIMAL = {"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test"}}


def test_a_message_has_thirty_seconds_by_default_and_fractions_are_allowed():
    assert validate(MINIMAL, "test.toml", environ={})["worker.message_seconds"] == 30.0
    for given, seconds in ((0.5, 0.5), (120, 120.0)):
        config = validate({**MINIMAL, "worker": {"message_seconds": given}}, "test.toml", environ={})
        assert config["worker.message_seconds"] == seconds and isinstance(config["worker.message_seconds"], float)


@pytest.mark.parametrize(
    "given, message",
    [
        (0, "above 0, not 0"),
        (-1.5, "above 0, not -1.5"),
        (float("nan"), "above 0, not nan"),
        (float("inf"), "above 0, not inf"),
        (True, "must be int/float, not bool"),
        ("30", "must be int/float, not str"),
    ],
)
def test_a_message_budget_that_is_not_a_positive_number_of_seconds_is_named(given, message):
    with pytest.raises(ConfigError) as error:
        validate({**MINIMAL, "worker": {"message_seconds": given}}, "test.toml", environ={})
    assert "'worker.message_seconds'" in str(error.value) and message in str(error.value)
