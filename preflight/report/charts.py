"""Inline SVG line charts for the report: the load run's latency percentiles and throughput over
time. Drawn here, in Python, so the report stays one self-contained file with no script and no
external asset; colours are SVG presentation attributes, which the report's CSP allows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup

# Colour-blind-safe (Okabe-Ito) and distinguishable in greyscale by dash pattern.
PALETTE = (
    ("#0072b2", ""),
    ("#d55e00", "6 3"),
    ("#009e73", "2 2"),
    ("#cc79a7", "8 3 2 3"),
    ("#e69f00", "1 3"),
)
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 34


@dataclass(frozen=True)
class Series:
    key: str  # field of each point
    label: str


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (an axis end)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _values(points: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for p in points:
        v = p.get(key)
        out.append(float(v) if isinstance(v, int | float) and math.isfinite(v) else None)
    return out


def line_chart(
    points: Sequence[Mapping[str, Any]],
    x: str,
    series: Sequence[Series],
    *,
    title: str,
    unit: str,
) -> Markup:
    """An SVG chart of `series` over `x`; gaps (missing values) break the line. Empty when no
    point has a value."""
    xs = _values(points, x)
    columns = [(s, _values(points, s.key)) for s in series]
    known = [v for _, vs in columns for v in vs if v is not None]
    known_x = [v for v in xs if v is not None]
    if not known or len(known_x) < 2:
        return Markup("")
    x0, x1 = min(known_x), max(known_x)
    y1 = nice_max(max(known))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(v: float) -> float:
        return LEFT + (v - x0) / ((x1 - x0) or 1) * plot_w

    def py(v: float) -> float:
        return TOP + plot_h - v / y1 * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label={quoteattr(f"{title} ({unit})")}>',
        f"<title>{escape(title)} ({escape(unit)})</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    for i in range(5):  # horizontal grid lines with their values
        value = y1 * i / 4
        y = py(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#ccc" stroke-width="0.5"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{_number(value)}</text>"
        )
    parts.append(
        f'<text x="12" y="{TOP + plot_h / 2:.0f}" font-size="10" '
        f'transform="rotate(-90 12 {TOP + plot_h / 2:.0f})" text-anchor="middle">'
        f"{escape(unit)}</text>"
    )
    for value in (x0, (x0 + x1) / 2, x1):
        parts.append(
            f'<text x="{px(value):.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="10" '
            f'text-anchor="middle">{_number(round(value, 1))} s</text>'
        )
    legend_x = LEFT
    for index, (s, values) in enumerate(columns):
        colour, dash = PALETTE[index % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for xv, yv in zip(xs, values, strict=True):
            if xv is None or yv is None:
                runs.append([])
                continue
            runs[-1].append(f"{px(xv):.1f},{py(yv):.1f}")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for run in runs:
            if len(run) == 1:
                x_, y_ = run[0].split(",")
                parts.append(f'<circle cx="{x_}" cy="{y_}" r="2" fill="{colour}"/>')
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dash_attr} '
                    f'points="{" ".join(run)}"/>'
                )
        legend_y = HEIGHT - 6
        parts.append(
            f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{legend_y - 4}" '
            f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        parts.append(
            f'<text x="{legend_x + 22}" y="{legend_y}" font-size="10">{escape(s.label)}</text>'
        )
        legend_x += 34 + 6 * len(s.label)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it is escaped above


def load_charts(load: Mapping[str, Any]) -> list[Markup]:
    """The load run's charts: latency percentiles, and throughput with failures and users."""
    points = load.get("timeseries") or []
    charts = [
        line_chart(
            points,
            "t_s",
            [
                Series("http_p50_ms", "HTTP p50"),
                Series("http_p95_ms", "HTTP p95"),
                Series("http_p99_ms", "HTTP p99"),
                Series("ws_delivery_p95_ms", "WebSocket delivery p95"),
            ],
            title="Latency over time",
            unit="ms",
        ),
        line_chart(
            points,
            "t_s",
            [
                Series("requests_per_s", "requests/s"),
                Series("failures_per_s", "failures/s"),
                Series("users", "users"),
                Series("ws_connections", "open sockets"),
            ],
            title="Throughput and scale over time",
            unit="per s / count",
        ),
    ]
    return [c for c in charts if c]
