"""Configuration: the public key names, typed settings, validation messages, secrets from the environment."""
from __future__ import annotations

import dataclasses
import pickle
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from refunddesk.config import KEYS, SECRET, Config, ConfigError, env_name, flatten, keys, load, parse, validate

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.example.toml"
MINIMAL = {"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test"}}
SECRETS = [name for name, spec, _ in keys() if spec.metadata.get("secret")]

PUBLIC_KEYS = [
    "store.path", "store.files", "worker.processes", "worker.message_seconds", "policy.preset", "policy.file",
    "email.refunds_address", "email.appeals_address",
    "email.smtp_intake.enabled", "email.smtp_intake.host", "email.smtp_intake.port",
    "email.smtp_intake.max_message_bytes",
    "email.imap.enabled", "email.imap.host", "email.imap.port", "email.imap.tls", "email.imap.username",
    "email.imap.password", "email.imap.folder", "email.imap.processed_folder",
    "email.outgoing.host", "email.outgoing.port", "email.outgoing.starttls", "email.outgoing.username",
    "email.outgoing.password",
    "telegram.enabled", "telegram.token", "telegram.api_url",
    "console.enabled", "console.host", "console.port",
]


def setting(config: object, dotted: str) -> object:
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def with_key(raw: dict, dotted: str, value: object) -> dict:
    """A copy of a parsed TOML table with one more key set."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return {**raw, head: value}
    return {**raw, head: with_key(raw.get(head, {}), rest, value)}


def test_the_public_key_names_are_all_still_there():
    assert set(PUBLIC_KEYS) <= set(KEYS)


def test_the_example_documents_every_key_and_no_other():
    example = set(flatten(tomllib.loads(EXAMPLE.read_text("utf-8"))))
    assert sorted(set(KEYS) - example) == [], "keys of the dataclasses missing from config.example.toml"
    assert sorted(example - set(KEYS)) == [], "keys in config.example.toml that no dataclass reads"


def test_the_packaged_example_is_the_same_file():
    assert (REPO / "refunddesk" / "config.example.toml").read_bytes() == EXAMPLE.read_bytes()


def test_the_example_runs_as_is_with_the_defaults_of_the_dataclasses():
    example = load(EXAMPLE, environ={})
    addresses = {"refunds_address": example.email.refunds_address, "appeals_address": example.email.appeals_address}
    assert example == validate({"email": addresses}, str(EXAMPLE), environ={})
    assert example.email.smtp_intake.port == 2525 and example.console.port == 8025
    assert example.store.path == REPO / "var" / "refunddesk.db"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"email": {"refunds_address": "r@x.test"}}, "missing key 'email.appeals_address'"),
        ({**MINIMAL, "store": {"pathh": "x"}}, "unknown key 'store.pathh'"),
        ({**MINIMAL, "platform": {"kind": "new-api"}}, "unknown key 'platform.kind'"),
        ({**MINIMAL, "store": {"path": {"x": 1}}}, "unknown key 'store.path.x'"),
        (with_key(MINIMAL, "email.smtp_intake.port", "25"), "'email.smtp_intake.port' must be int, not str"),
        (with_key(MINIMAL, "email.smtp_intake.port", True), "'email.smtp_intake.port' must be int, not bool"),
        (with_key(MINIMAL, "email.imap.tls", 1), "'email.imap.tls' must be bool, not int"),
        ({**MINIMAL, "store": {"path": 5}}, "'store.path' must be str, not int"),
        ({**MINIMAL, "store": {"path": ""}}, "'store.path' must name a file or folder"),
        ({**MINIMAL, "policy": {"preset": "acme"}}, "'policy.preset' must be one of 302ai, ipfixed, not 'acme'"),
        ({**MINIMAL, "policy": {"preset": 3}}, "'policy.preset' must be str, not int"),
        ({"email": {"refunds_address": "r@x.test\r\nBcc: e@x", "appeals_address": "a@x.test"}}, "plain email address"),
        ({**MINIMAL, "telegram": {"enabled": True}}, "telegram.token"),
        (with_key(MINIMAL, "email.imap.enabled", True), "'email.imap.username' is empty"),
        ({**MINIMAL, "worker": {"processes": 0}}, "'worker.processes' must be from 1 to 16"),
    ],
)
def test_a_wrong_or_missing_key_is_named(raw, message):
    with pytest.raises(ConfigError) as error:
        validate(raw, "test.toml", environ={})
    assert message in str(error.value)
    assert str(error.value).startswith("test.toml: ")


def test_settings_are_typed_attributes():
    raw = with_key(with_key({**MINIMAL, "worker": {"processes": 3}}, "email.imap.port", 143), "email.imap.tls", False)
    config = validate(raw, "test.toml", environ={})
    assert config.worker.processes == 3
    assert (config.email.imap.port, config.email.imap.tls, config.email.imap.folder) == (143, False, "INBOX")
    assert config.email.smtp_intake.max_message_bytes == 25 * 1024 * 1024
    assert config.policy.preset == "302ai" and config.policy.file is None


@pytest.mark.parametrize("key", SECRETS)
def test_every_secret_comes_from_the_environment_or_the_file_and_never_shows_in_repr(key):
    assert setting(validate(MINIMAL, "test.toml", environ={}), key) == ""
    from_env = validate(MINIMAL, "test.toml", environ={env_name(key): "from-env-SECRET"})
    from_file = validate(with_key(MINIMAL, key, "in-file-SECRET"), "test.toml", environ={})
    assert (setting(from_env, key), setting(from_file, key)) == ("from-env-SECRET", "in-file-SECRET")
    for config in (from_env, from_file):
        assert "SECRET" not in repr(config) and "SECRET" not in str(config)


def test_the_environment_wins_over_the_file_for_a_secret_and_the_bot_token_is_checked_after():
    raw = {**MINIMAL, "telegram": {"enabled": True, "token": "in-file"}}
    config = validate(raw, "test.toml", environ={"REFUNDDESK_TELEGRAM_TOKEN": "123:SECRET-TOKEN"})
    assert config.telegram.token == "123:SECRET-TOKEN"
    assert "SECRET-TOKEN" not in repr(config)
    with pytest.raises(ConfigError, match="REFUNDDESK_TELEGRAM_TOKEN"):
        validate({**MINIMAL, "telegram": {"enabled": True}}, "test.toml", environ={})


def test_a_key_that_is_no_secret_is_not_read_from_the_environment():
    config = validate(MINIMAL, "test.toml", environ={"REFUNDDESK_EMAIL_IMAP_HOST": "imap.evil.test"})
    assert config.email.imap.host == "127.0.0.1"


def test_config_file_is_chosen_by_environment_variable_and_paths_are_relative_to_its_folder(tmp_path):
    path = tmp_path / "chosen.toml"
    path.write_text(
        '[store]\nfiles = "/srv/evidence"\n[policy]\ncalendar_overrides = "days.toml"\n'
        '[email]\nrefunds_address = "r@x.test"\nappeals_address = "a@x.test"\n'
        '[email.smtp_intake]\ntls_cert = "tls/cert.pem"\n'
    )
    config = load(None, environ={"REFUNDDESK_CONFIG": str(path)})
    assert config.source == str(path)
    assert config.store.path == tmp_path / "var" / "refunddesk.db"  # the default, resolved too
    assert config.store.files == Path("/srv/evidence")
    assert config.policy.calendar_overrides == tmp_path / "days.toml"
    assert config.email.smtp_intake.tls_cert == tmp_path / "tls" / "cert.pem"
    assert config.email.smtp_intake.tls_key is None and config.policy.file is None
    assert config.email.outgoing.folder == tmp_path / "var" / "outgoing"


def test_a_config_from_no_file_keeps_its_paths_as_written():
    config = validate(MINIMAL, "<built in a test>", environ={})
    assert config.store.path == Path("var/refunddesk.db")


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="refunddesk init"):
        load(tmp_path / "nope.toml", environ={})


def test_a_file_that_is_no_toml_is_named(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[email\n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load(path, environ={})


def test_settings_are_frozen_and_survive_the_pipe_to_the_worker():
    config = validate(MINIMAL, "test.toml", environ={"REFUNDDESK_EMAIL_IMAP_PASSWORD": "pw"})
    again = pickle.loads(pickle.dumps(config))
    assert again == config and again.email.imap.password == "pw" and again.source == "test.toml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.email.imap.port = 1  # type: ignore[misc]


def test_a_message_has_thirty_seconds_by_default_and_fractions_are_allowed():
    assert validate(MINIMAL, "test.toml", environ={}).worker.message_seconds == 30.0
    for given, seconds in ((0.5, 0.5), (120, 120.0)):
        config = validate({**MINIMAL, "worker": {"message_seconds": given}}, "test.toml", environ={})
        assert config.worker.message_seconds == seconds and isinstance(config.worker.message_seconds, float)


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


# The shapes the next sections need (a list of strings, a secret, a nested table), read by the same rules.
@dataclass(frozen=True, kw_only=True)
class Proxies:
    trusted: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Future:
    token: str = field(default="", repr=False, metadata=SECRET)
    timeout_seconds: float = 10.0
    proxies: Proxies = field(default_factory=Proxies)


@dataclass(frozen=True, kw_only=True)
class FutureFile:
    platform: Future = field(default_factory=Future)


def test_a_list_of_strings_and_a_nested_table_are_read_and_checked():
    raw = {"platform": {"timeout_seconds": 3, "proxies": {"trusted": ["10.0.0.1", "10.0.0.0/8"]}}}
    read = parse(FutureFile, raw, "future.toml", environ={"REFUNDDESK_PLATFORM_TOKEN": "tok-SECRET"})
    assert read.platform.proxies.trusted == ("10.0.0.1", "10.0.0.0/8")
    assert read.platform.timeout_seconds == 3.0 and read.platform.token == "tok-SECRET"
    assert "SECRET" not in repr(read)
    assert parse(FutureFile, {}, "future.toml", environ={}).platform.proxies.trusted == ()
    for wrong, message in (("10.0.0.1", "must be a list of str, not str"),
                           (["10.0.0.1", 8], "must be a list of str, not a list holding int 8")):
        with pytest.raises(ConfigError) as error:
            parse(FutureFile, {"platform": {"proxies": {"trusted": wrong}}}, "future.toml", environ={})
        assert f"future.toml: key 'platform.proxies.trusted' {message}" in str(error.value)
    with pytest.raises(ConfigError, match="unknown key 'platform.proxies.trustd'"):
        parse(FutureFile, {"platform": {"proxies": {"trustd": []}}}, "future.toml", environ={})


def test_an_annotation_without_a_rule_is_refused_before_any_file_is_read():
    @dataclass(frozen=True, kw_only=True)
    class Odd:
        when: complex = 0j

    with pytest.raises(TypeError, match="no configuration rule"):
        list(keys(Odd))


def test_source_is_no_key():
    assert "source" not in KEYS and all(not name.endswith(".source") for name in KEYS)
    assert Config.__dataclass_fields__["source"].metadata == {"key": False}
