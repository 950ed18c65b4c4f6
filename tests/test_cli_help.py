"""Every `refunddesk` command explains itself: a description on each subcommand, a help text on
each argument, and the forms a user must type (case ids, dates) spelt out where they are asked."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from refunddesk.cli import build_parser, main

REFUNDDESK = Path(sys.executable).with_name("refunddesk")  # the installed entry point, as users run it


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of the program and of every subcommand below it, e.g. (("cases", "approve"), ...)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, path + (name,))


ALL = list(commands(build_parser()))


def arguments(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_the_walk_finds_every_command():
    names = {" ".join(path) for path, _ in ALL}
    expected = {
        "init", "serve", "deliver", "import", "queue", "sla", "export",
        "cases list", "cases show", "cases approve", "cases reject", "cases request-info", "cases flag",
        "cases reasons",
        "deadletters list", "deadletters retry", "agents add", "agents list", "agents disable", "agents enable",
    }
    assert expected <= names, expected - names


@pytest.mark.parametrize("path,parser", ALL, ids=[" ".join(p) or "refunddesk" for p, _ in ALL])
def test_each_command_and_argument_has_a_description(path, parser):
    assert (parser.description or "").strip(), f"`refunddesk {' '.join(path)}` has no description"
    for action in arguments(parser):
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), (path, action.dest)
        if isinstance(action, argparse._SubParsersAction):
            # The lines of the parent's list of subcommands.
            for listed in action._choices_actions:
                assert (listed.help or "").strip(), (path, listed.dest)


def test_case_ids_and_dates_say_their_form():
    for path, parser in ALL:
        for action in arguments(parser):
            if action.dest == "id" and path[0] == "cases":
                assert "RF-000001" in action.help, path
            if action.dest in ("first", "last"):
                assert "YYYY-MM-DD" in action.help and "YYYY-MM-DD" in action.metavar, path


def test_every_help_page_prints(capsys):
    for path, _ in ALL:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0
        page = capsys.readouterr().out
        assert page.startswith("usage: refunddesk"), path


def test_init_and_serve_explain_themselves():
    for command, words in (("init", ("REFUNDDESK_CONFIG", "never overwritten", "agents add")),
                           ("serve", ("SIGTERM", "console", "addresses to mail"))):
        shown = subprocess.run([str(REFUNDDESK), command, "--help"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert all(word in shown.stdout for word in words), shown.stdout
        assert len(shown.stdout.splitlines()) > 8, shown.stdout  # more than `-h, --help`


def test_cases_flag_help_lists_the_flags_and_the_way_to_clear_them(capsys):
    with pytest.raises(SystemExit):
        main(["cases", "flag", "--help"])
    page = capsys.readouterr().out
    assert "force_majeure" in page and "long_term_user" in page and "--clear" in page


def test_request_info_message_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["cases", "request-info", "--help"])
    page = capsys.readouterr().out
    assert "--message MESSAGE" in page and "sent to the customer" in page


def test_listing_and_showing_cases_load_no_reader(make_desk, tmp_path):
    """What keeps `cases list`, `queue` and `cases show` fast (bench/cli_speed.py times them): the
    reader, dateparser, the mail parser and the channels' libraries are loaded only by the
    commands that read messages or serve."""
    make_desk()
    heavy = ["dateparser", "refunddesk.policy.extract", "refunddesk.policy.dialog", "refunddesk.intake.pipeline",
             "refunddesk.intake.email.parse", "starlette", "telegram", "aiosmtpd", "jinja2", "holidays.countries"]
    config = str(tmp_path / "refunddesk.toml")
    probe = (
        "import contextlib, io, json, sys\n"
        "from refunddesk.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for command in (['cases', 'list'], ['queue'], ['cases', 'show', 'RF-000001'], ['sla']):\n"
        f"        main(['--config', {config!r}, *command])\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
