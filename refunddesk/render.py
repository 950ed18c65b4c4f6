"""Rendering every text a customer or agent reads from the Jinja2 templates, per language.

Each template has a `subject` block and a `body` block. StrictUndefined turns a missing
context value into an error at render time instead of a letter with a hole in it; HTML
templates are autoescaped, plain-text letters are not (they are never interpreted as markup).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2

LANGUAGES = ("en", "zh")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("refunddesk.templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # The templates ship with the package; like the configuration, a change is read at the
        # next start. (Checking every file's mtime before each letter was ~2 % of the worker.)
        auto_reload=False,
    )
    return env


def language_of(value: str | None) -> str:
    return "zh" if (value or "").lower().startswith("zh") else "en"


def render(template: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of `template` in the customer's language."""
    env = environment()
    tmpl = env.get_template(f"{language_of(language)}/{template}.txt.j2")
    ctx = tmpl.new_context(dict(context))
    # Run the template's top level once so its imports and sets exist before the blocks use them.
    for _ in tmpl.root_render_func(ctx):
        pass
    subject = "".join(tmpl.blocks["subject"](ctx)).strip() if "subject" in tmpl.blocks else ""
    body = "".join(tmpl.blocks["body"](ctx)).strip() + "\n"
    # A subject is one line no matter what the customer put into it (no header injection).
    return " ".join(subject.split()), body
