"""Small charts for the dashboard, drawn on the server as inline SVG: no script, no CDN, and
nothing the Content-Security-Policy has to allow. Every text in a chart is escaped here.
"""

from __future__ import annotations

from html import escape
from typing import Any

from markupsafe import Markup

WIDTH, HEIGHT = 640, 220
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 44, 36, 16
COLORS = {"email": "#2f6db5", "telegram": "#33a37a", "bar": "#5b7db1", "late": "#c8453b", "limit": "#c8453b"}


def svg(title: str, body: list[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(title)}" class="chart">'
    )
    return Markup(head + f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def axis(top: float) -> list[str]:
    plot_h = HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    parts = [
        f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{HEIGHT - MARGIN_BOTTOM}" stroke="#888"/>',
        f'<line x1="{MARGIN_LEFT}" y1="{HEIGHT - MARGIN_BOTTOM}" x2="{WIDTH - 8}" y2="{HEIGHT - MARGIN_BOTTOM}"'
        ' stroke="#888"/>',
    ]
    for step in range(0, 5):
        value = top * step / 4
        y = HEIGHT - MARGIN_BOTTOM - plot_h * step / 4
        parts.append(
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#555">{value:g}</text>'
        )
    return parts


def nice_top(value: float) -> float:
    for top in (1, 2, 4, 5, 10, 20, 24, 48, 50, 72, 100, 120, 200, 500, 1000):
        if value <= top:
            return float(top)
    return float(value)


def cases_per_day(
    per_day: list[dict[str, Any]],
    channels: tuple[str, ...] = ("email", "telegram"),
    names: dict[str, str] | None = None,
) -> Markup:
    """Stacked bars: how many cases arrived each day, by channel (shown by its name in `names`)."""
    name = (names or {}).get
    totals = [sum(day.get(c, 0) for c in channels) for day in per_day] or [0]
    top = nice_top(max(max(totals), 1))
    plot_w, plot_h = WIDTH - MARGIN_LEFT - 8, HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    slot = plot_w / max(len(per_day), 1)
    parts = axis(top)
    for index, day in enumerate(per_day):
        x = MARGIN_LEFT + index * slot + slot * 0.15
        base = HEIGHT - MARGIN_BOTTOM
        for channel in channels:
            count = day.get(channel, 0)
            if count:
                h = plot_h * count / top
                base -= h
                title = f"{escape(day['date'])} {escape(name(channel, channel))}: {count}"
                parts.append(
                    f'<rect x="{x:.1f}" y="{base:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}"'
                    f' fill="{COLORS[channel]}"><title>{title}</title></rect>'
                )
        parts.append(
            f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 14}" font-size="9" text-anchor="middle"'
            f' fill="#555">{escape(day["date"][5:])}</text>'
        )
    for offset, channel in enumerate(channels):
        parts.append(
            f'<rect x="{MARGIN_LEFT + 10 + offset * 90}" y="{HEIGHT - 12}" width="10" height="10"'
            f' fill="{COLORS[channel]}"/>'
            f'<text x="{MARGIN_LEFT + 24 + offset * 90}" y="{HEIGHT - 3}" font-size="10" fill="#333">'
            f"{escape(name(channel, channel))}</text>"
        )
    return svg("Cases per day by channel", parts)


def times_against_limit(
    title: str, items: list[dict[str, Any]], limit_key: str | None = None, limit: float | None = None, unit: str = "h"
) -> Markup:
    """One bar per case: how long it took, with its limit drawn as a red mark (or line).

    `limit` is one limit for all (the 24-hour acknowledgement); `limit_key` names a per-case
    limit (a review's allowed time depends on the working days it spans)."""
    limits = [item[limit_key] for item in items] if limit_key else [limit or 0] * len(items)
    top = nice_top(max([i["hours"] for i in items] + limits + [1]))
    plot_w, plot_h = WIDTH - MARGIN_LEFT - 8, HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    slot = plot_w / max(len(items), 1)
    y_of = lambda value: HEIGHT - MARGIN_BOTTOM - plot_h * value / top  # noqa: E731
    parts = axis(top)
    for index, (item, allowed) in enumerate(zip(items, limits, strict=True)):  # one limit per item, above
        x = MARGIN_LEFT + index * slot + slot * 0.15
        late = item["hours"] > allowed
        y = y_of(item["hours"])
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{HEIGHT - MARGIN_BOTTOM - y:.1f}"'
            f' fill="{COLORS["late" if late else "bar"]}">'
            f"<title>{escape(item['case_id'])}: {item['hours']:g} {unit} (limit {allowed:g} {unit})</title></rect>"
        )
        if limit_key:
            parts.append(
                f'<line x1="{x - 1:.1f}" x2="{x + slot * 0.7 + 1:.1f}"'
                f' y1="{y_of(allowed):.1f}" y2="{y_of(allowed):.1f}" stroke="{COLORS["limit"]}" stroke-width="2"/>'
            )
    if limit is not None:
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - 8}" y1="{y_of(limit):.1f}" y2="{y_of(limit):.1f}"'
            f' stroke="{COLORS["limit"]}" stroke-dasharray="4 3"/>'
            f'<text x="{WIDTH - 10}" y="{y_of(limit) - 4:.1f}" font-size="10" text-anchor="end"'
            f' fill="{COLORS["limit"]}">limit {limit:g} {unit}</text>'
        )
    if not items:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="12" text-anchor="middle" fill="#777">no data yet</text>'
        )
    return svg(title, parts)
