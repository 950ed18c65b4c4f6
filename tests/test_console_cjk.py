"""Chinese text on a case page is drawn as Chinese glyphs, not as tofu (the empty boxes a browser
draws for characters no installed font has), in the real Chromium, served by the real
`refunddesk serve`.

How it tells: each character is drawn alone, in the font the page gives the customer's message,
at the same spot, and screenshotted. Without a font for them every character is the same box,
so different characters give the same image; with one they differ. The same measure run in a
Chromium that sees only DejaVu (no CJK glyphs) must find tofu, or it could not fail at all.
Needs Debian's fonts-noto-cjk (scripts/setup.sh --test installs it).
"""
from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest

from conftest import base_settings, free_port, run_cli, write_config
from serving import Served
from refunddesk.config import load
from refunddesk.desk import Desk
from refunddesk.harness.driver import mail_case
from refunddesk.store.clock import utcnow

from test_console_browser import PASSWORD, launch, log_in, playwright_api

CUSTOMER_TEXT = "您好，我的账户昨天被重复扣费了，请帮我退款。"
HAN = re.compile(r"[\u4e00-\u9fff]")
DEJAVU_ONLY = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>/usr/share/fonts/truetype/dejavu</dir>
  <cachedir>{cache}</cachedir>
</fontconfig>
"""
# Draws one character alone, in the font of the element it is asked about, at a fixed spot.
PROBE = """([selector, character]) => {
  const source = document.querySelector(selector);
  const style = getComputedStyle(source);
  let probe = document.getElementById("glyph-probe");
  if (!probe) {
    probe = document.createElement("span");
    probe.id = "glyph-probe";
    document.body.appendChild(probe);
  }
  Object.assign(probe.style, {
    position: "fixed", left: "0px", top: "0px", zIndex: "2147483647", padding: "4px",
    background: "#ffffff", color: "#000000", lineHeight: "1.3", whiteSpace: "pre",
    fontFamily: style.fontFamily, fontSize: style.fontSize, fontWeight: style.fontWeight, fontStyle: style.fontStyle,
  });
  probe.textContent = character;
  return style.fontFamily;
}"""


@pytest.fixture(scope="module")
def chinese_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cjk")
    port = free_port()
    settings = base_settings(tmp, **{"console.enabled": True, "console.port": port})
    config = write_config(tmp / "refunddesk.toml", settings)
    desk = Desk.from_config(load(config, environ={}))
    db = desk.open_db()
    when = utcnow() - timedelta(hours=2)
    case_id = mail_case(desk, db, "wang@lumen.test", CUSTOMER_TEXT, when, subject="退款申请")
    db.conn.close()
    added = run_cli(config, "agents", "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n".encode())
    assert added.returncode == 0, added.stderr.decode()
    served = Served(config, tmp / "serve.log").start(wait_ports=(port,))
    yield {"url": f"http://127.0.0.1:{port}", "case": case_id}
    served.stop()


@pytest.fixture(scope="module")
def driver():
    with playwright_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(driver):
    launched = launch(driver)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def browser_without_cjk(driver, tmp_path_factory):
    """A Chromium whose fontconfig knows only DejaVu, which has no CJK glyphs."""
    tmp = tmp_path_factory.mktemp("fontconfig")
    conf = tmp / "fonts.conf"
    conf.write_text(DEJAVU_ONLY.format(cache=tmp / "cache"), "utf-8")
    launched = launch(driver, {**os.environ, "FONTCONFIG_FILE": str(conf)})
    yield launched
    launched.close()


def glyph_images(page, selector: str, characters: list[str]) -> dict[str, bytes]:
    """Each character's picture as the page's font for `selector` draws it."""
    images = {}
    for character in characters:
        page.evaluate(PROBE, [selector, character])
        images[character] = page.locator("#glyph-probe").screenshot(animations="disabled", caret="hide")
    return images


def han_of(text: str) -> list[str]:
    return list(dict.fromkeys(HAN.findall(text)))


def open_message(browser, chinese_case):
    page = browser.new_page()
    log_in(page, chinese_case["url"], f"/cases/{chinese_case['case']}")
    shown = page.locator("article.message.in pre.text").first.inner_text()
    assert CUSTOMER_TEXT in shown
    return page, han_of(shown)[:10]


def test_chinese_on_the_case_page_is_drawn_in_glyphs_not_tofu(chinese_case, browser):
    page, characters = open_message(browser, chinese_case)
    assert len(characters) == 10
    images = glyph_images(page, "article.message.in pre.text", characters)
    blank = glyph_images(page, "article.message.in pre.text", ["\u3000"])["\u3000"]  # an ideographic space
    same = len(characters) - len(set(images.values()))
    assert same == 0 and blank not in images.values(), (
        f"{same + 1} of {len(characters)} different Chinese characters look alike on the case page: tofu. "
        "Install a CJK font: apt-get install -y --no-install-recommends fonts-noto-cjk"
    )
    page.close()


def test_the_measure_sees_tofu_where_no_font_has_chinese(chinese_case, browser_without_cjk):
    page, characters = open_message(browser_without_cjk, chinese_case)
    images = glyph_images(page, "article.message.in pre.text", characters)
    assert len(set(images.values())) == 1, "without a CJK font every character should be the same box"
    page.close()
