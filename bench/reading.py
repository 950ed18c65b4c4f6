"""Reading cost: the field reader on hostile texts at 10 KB and 100 KB, and on typical mail.

For each shape of noise that once made the reader super-linear (tests/test_reading_hostile.py
generates the same ones), the time of `read_fields` on a request followed by 10 KB and by
100 KB of it, and their ratio: linear is about 10, and since the reader reads at most
OWN_WORDS_LIMIT characters of own words, 100 KB costs little more than the cap. So the same
is measured below the cap too (1.6 KB against 16 KB of the text read in full), where the
ratio shows the readers' own growth: linear is about 10 (target <= 12). The baseline, measured
in the same run, is one linear pass of Python over the same text (str.split), so the last
column says how many such passes reading costs.

    python bench/reading.py            # every generator, the fastest of 5 runs each
    python bench/reading.py --runs 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import _common as c
from test_reading_hostile import NOISE, REQUEST  # noqa: E402 (the tests' generators)
from refunddesk.policy.extract import read_fields
from refunddesk.policy.text import OWN_WORDS_LIMIT

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 20, 10, tzinfo=TZ)
TARGET_RATIO = 12


def timed(func, text: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func(text)
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed run: other processes only ever add time


def read(text: str) -> None:
    read_fields(text, NOW, TZ)


def text_of(unit: str, size: int) -> str:
    return REQUEST + "\n" + unit * (size // len(unit))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    c.header("reading: the field reader on hostile and typical text")
    print(f"reader cap: {OWN_WORDS_LIMIT} characters of own words; fastest of {args.runs} runs")
    print(f"{'noise':<14} {'10 KB ms':>9} {'100 KB ms':>10} {'ratio':>6}   {'1.6 KB ms':>9} {'16 KB ms':>9} {'ratio':>6}   {'x split':>8}")
    worst = 0.0
    small, large = OWN_WORDS_LIMIT // 10, OWN_WORDS_LIMIT
    for kind, unit in NOISE.items():
        at10, at100 = (timed(read, text_of(unit, n), args.runs) for n in (10_000, 100_000))
        below_small, below_large = (timed(read, text_of(unit, n - len(REQUEST) - 1), args.runs) for n in (small, large))
        split = timed(str.split, text_of(unit, 100_000), args.runs)
        below = below_large / below_small
        worst = max(worst, below)
        print(f"{kind:<14} {at10 * 1e3:9.2f} {at100 * 1e3:10.2f} {at100 / at10:6.1f}   {below_small * 1e3:9.2f} {below_large * 1e3:9.2f} {below:6.1f}   {at100 / split:8.0f}")
    print(f"worst ratio below the cap: {worst:.1f} (linear ~10, target <= {TARGET_RATIO}): {c.verdict(worst <= TARGET_RATIO)}")

    mails = [e["text"] for e in json.loads((c.REPO / "tests" / "data" / "labelled_requests.json").read_text(encoding="utf-8"))]
    costs = [timed(read, text, args.runs) for text in mails]
    splits = [timed(str.split, text, args.runs) for text in mails]
    print(f"typical mail ({len(mails)} labelled first mails, median {statistics.median(len(t) for t in mails)} chars): "
          f"median {statistics.median(costs) * 1e3:.2f} ms, p95 {sorted(costs)[int(len(costs) * 0.95)] * 1e3:.2f} ms, "
          f"{statistics.median(costs) / statistics.median(splits):.0f}x a str.split of the same text")


if __name__ == "__main__":
    main()
