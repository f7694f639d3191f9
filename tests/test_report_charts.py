"""The report's inline SVG charts: drawn from the load run's time series, gaps shown as gaps,
every text escaped, nothing drawn without data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from preflight.report.charts import Series, line_chart, load_charts, nice_max, outcome_chart

SVG = "{http://www.w3.org/2000/svg}"


def points_of(svg: str) -> list[list[tuple[float, float]]]:
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    return [
        [tuple(float(v) for v in pair.split(",")) for pair in line.attrib["points"].split()]  # type: ignore[misc]
        for line in root.iter(f"{SVG}polyline")
    ]


def test_axis_ends_are_round_numbers_at_or_above_the_peak() -> None:
    assert [nice_max(v) for v in (0, 0.7, 1, 1.5, 3, 7, 42, 180, 1001)] == [
        1,
        1,
        1,
        2,
        5,
        10,
        50,
        200,
        2000,
    ]


def test_a_series_is_one_line_rising_where_the_values_rise_and_broken_at_gaps() -> None:
    points: list[dict[str, int | None]] = [
        {"t": 0, "p95": 10},
        {"t": 1, "p95": 20},
        {"t": 2, "p95": None},
        {"t": 3, "p95": 40},
        {"t": 4, "p95": None},
        {"t": 5, "p95": 30},
    ]
    chart = line_chart(points, "t", [Series("p95", "p95 <&>")], title="Latency & co", unit="ms")
    svg = chart.svg
    lines = points_of(svg)
    assert len(lines) == 1, "gaps leave one two-point line and two single points"
    (a, b) = lines[0]
    assert a[0] < b[0], "later is to the right"
    assert a[1] > b[1], "larger is higher"
    assert len(re.findall("<circle", svg)) == 2
    assert [e.label for e in chart.legend] == ["p95 <&>"], "the legend is HTML beside the chart"
    assert "Latency &amp; co" in svg
    assert "<script" not in svg


def test_no_chart_without_data_and_the_load_charts_follow_the_record() -> None:
    assert not line_chart([], "t", [Series("x", "x")], title="t", unit="u")
    assert load_charts({"timeseries": []}) == []
    series = [
        {
            "t_s": t,
            "http_p50_ms": 5,
            "http_p95_ms": 9 + t,
            "http_p99_ms": 12 + t,
            "ws_delivery_p95_ms": 8,
            "requests_per_s": 20 + t,
            "failures_per_s": 0,
            "users": 20,
            "ws_connections": 20,
        }
        for t in range(0, 10, 2)
    ]
    latency, throughput = load_charts({"timeseries": series})
    assert "Latency over time" in latency.svg
    assert "WebSocket delivery p95" in [e.label for e in latency.legend]
    assert len(points_of(latency.svg)) == 4
    assert len(points_of(throughput.svg)) == 4


def test_the_load_items_thresholds_are_drawn_and_reach_the_axis() -> None:
    series = [{"t_s": t, "http_p95_ms": 40, "users": 50} for t in range(0, 10, 2)]
    items = [
        {"id": "PERF-API-P95", "figures": {"metric": "api_latency_p95_ms", "comparison": "<",
                                           "value": 500.0}},
        {"id": "PERF-CONCURRENT-USERS", "figures": {"metric": "concurrent_users",
                                                    "comparison": ">=", "value": 500.0}},
        {"id": "PERF-ERROR-RATIO", "figures": {"metric": "error_ratio_pct", "comparison": "<",
                                               "value": 1.0}},
    ]  # fmt: skip
    latency, throughput = load_charts({"timeseries": series}, items)
    assert latency.svg.count('class="threshold"') == 1
    assert "PERF-API-P95 &lt; 500" in latency.svg
    assert ">500</text>" in latency.svg, "the axis reaches the threshold"
    assert [e.label for e in throughput.legend][-1] == "PERF-CONCURRENT-USERS >= 500"
    assert "PERF-ERROR-RATIO" not in latency.svg + throughput.svg


def test_the_outcome_chart_stacks_each_areas_outcomes() -> None:
    chart = outcome_chart([("security", {"pass": 3, "fail": 1}), ("backup", {"unverified": 2})])
    assert chart.svg.count("<rect") == 3
    assert "security: 1 fail" in chart.svg
    assert [e.label for e in chart.legend] == ["pass", "fail", "unverified"]
    assert not outcome_chart([])
