"""Inline SVG charts for the report: the outcomes of each area, and the load run's latency
percentiles and throughput over time with the load items' thresholds drawn in. Drawn here, in
Python, so the report stays one self-contained file with no external asset; colours are SVG
presentation attributes, which the report's CSP allows. Legends are HTML beside each chart, so
they stay readable when the chart shrinks on a phone."""

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


@dataclass(frozen=True)
class Threshold:
    """A load item's target on a chart's axis: `value` with the item id and comparison."""

    value: float
    label: str


@dataclass(frozen=True)
class LegendEntry:
    label: str
    colour: str
    dash: str = ""

    @property
    def swatch(self) -> Markup:
        dash = f' stroke-dasharray="{self.dash}"' if self.dash else ""
        return Markup(  # noqa: S704 - colour and dash are our own constants
            f'<svg class="swatch" width="22" height="10" viewBox="0 0 22 10" aria-hidden="true">'
            f'<line x1="1" x2="21" y1="5" y2="5" stroke="{self.colour}" stroke-width="3"{dash}/>'
            "</svg>"
        )


@dataclass(frozen=True)
class Chart:
    svg: Markup
    legend: tuple[LegendEntry, ...]

    def __bool__(self) -> bool:
        return bool(self.svg)


THRESHOLD_COLOUR = "#cf222e"
THRESHOLD_DASH = "5 4"
OUTCOME_COLOURS = {  # the report's --pass, --fail, ... (report.css)
    "pass": "#1a7f37",
    "fail": "#cf222e",
    "error": "#8250df",
    "skip": "#6e7781",
    "waived": "#9a6700",
    "attested": "#0969da",
    "unverified": "#bc4c00",
}


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
    thresholds: Sequence[Threshold] = (),
) -> Chart:
    """An SVG chart of `series` over `x`, with each threshold a dashed line the axis reaches;
    gaps (missing values) break a line. Empty when no point has a value."""
    xs = _values(points, x)
    columns = [(s, _values(points, s.key)) for s in series]
    known = [v for _, vs in columns for v in vs if v is not None]
    known_x = [v for v in xs if v is not None]
    if not known or len(known_x) < 2:
        return Chart(Markup(""), ())
    x0, x1 = min(known_x), max(known_x)
    y1 = nice_max(max([*known, *(t.value for t in thresholds)]))
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
    legend: list[LegendEntry] = []
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
        legend.append(LegendEntry(s.label, colour, dash))
    for threshold in thresholds:
        y = py(threshold.value)
        parts.append(
            f'<line class="threshold" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="{THRESHOLD_COLOUR}" stroke-width="1.2" '
            f'stroke-dasharray="{THRESHOLD_DASH}"/>'
        )
        parts.append(
            f'<text x="{WIDTH - RIGHT - 2}" y="{y - 3:.1f}" font-size="10" text-anchor="end" '
            f'fill="{THRESHOLD_COLOUR}">{escape(threshold.label)}</text>'
        )
        legend.append(LegendEntry(threshold.label, THRESHOLD_COLOUR, THRESHOLD_DASH))
    parts.append("</svg>")
    return Chart(Markup("".join(parts)), tuple(legend))  # noqa: S704 - every text is escaped


# Which load item metrics a chart's axis shows (checklist load items' `metric`).
LATENCY_METRICS = ("api_latency_p95_ms", "ws_delivery_p95_ms")
SCALE_METRICS = ("concurrent_users", "ws_connections_open")


def item_thresholds(items: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[Threshold]:
    """The targets of the load items measured by `metrics`, one line per distinct value."""
    seen: dict[float, list[str]] = {}
    for item in items:
        figures = item.get("figures") or {}
        value = figures.get("value")
        if figures.get("metric") in metrics and isinstance(value, int | float):
            seen.setdefault(float(value), []).append(f"{item['id']} {figures['comparison']}")
    return [Threshold(value, f"{', '.join(ids)} {value:g}") for value, ids in sorted(seen.items())]


def load_charts(load: Mapping[str, Any], items: Sequence[Mapping[str, Any]] = ()) -> list[Chart]:
    """The load run's charts: latency percentiles, and throughput with failures and users, each
    with the thresholds of the load items it shows."""
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
            thresholds=item_thresholds(items, LATENCY_METRICS),
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
            thresholds=item_thresholds(items, SCALE_METRICS),
        ),
    ]
    return [c for c in charts if c]


BAR_HEIGHT, BAR_GAP, LABEL_W = 18, 8, 120


def outcome_chart(rows: Sequence[tuple[str, Mapping[str, int]]]) -> Chart:
    """One stacked bar per area: how many of its items ended in each outcome."""
    if not rows:
        return Chart(Markup(""), ())
    widest = max(sum(counts.values()) for _, counts in rows) or 1
    plot_w = WIDTH - LABEL_W - RIGHT - 30
    height = len(rows) * (BAR_HEIGHT + BAR_GAP) + BAR_GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
        'role="img" aria-label="Outcomes by area"><title>Outcomes by area</title>'
    ]
    for index, (area, counts) in enumerate(rows):
        y = BAR_GAP + index * (BAR_HEIGHT + BAR_GAP)
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 13}" font-size="12" text-anchor="end">'
            f"{escape(area)}</text>"
        )
        x = float(LABEL_W)
        for outcome, colour in OUTCOME_COLOURS.items():
            n = counts.get(outcome, 0)
            if not n:
                continue
            w = n / widest * plot_w
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_HEIGHT}" '
                f'fill="{colour}"><title>{escape(area)}: {n} {outcome}</title></rect>'
            )
            if w >= 16:
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + 13}" font-size="11" fill="#ffffff" '
                    f'text-anchor="middle">{n}</text>'
                )
            x += w
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 13}" font-size="11">{sum(counts.values())}</text>'
        )
    parts.append("</svg>")
    used = {o for _, counts in rows for o, n in counts.items() if n}
    legend = tuple(LegendEntry(o, c) for o, c in OUTCOME_COLOURS.items() if o in used)
    return Chart(Markup("".join(parts)), legend)  # noqa: S704 - every text is escaped
