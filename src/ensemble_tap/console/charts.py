"""Line charts of the metrics history (``GET /admin/metrics/history``), drawn here as inline
SVG: no chart library, nothing to load, readable as a table of latest values without it.

A value missing from a point (unknown then) breaks its line instead of drawing it as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from ensemble_tap.console.times import parsed

WIDTH, HEIGHT = 480, 150
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 8, 22


@dataclass(slots=True, frozen=True)
class Line:
    key: str  # the series' name in the history's points
    label: str
    css: str  # the class that colours it (console.css: .line-1 …)


@dataclass(slots=True, frozen=True, kw_only=True)
class Chart:
    id: str
    title: str
    unit: str
    lines: tuple[Line, ...]


@dataclass(slots=True, frozen=True)
class Drawn:
    chart: Chart
    svg: Markup
    latest: tuple[tuple[Line, float | None], ...]  # each line's newest known value


CHARTS = (
    Chart(id="webhooks", title="Webhooks", unit="per s",
          lines=(Line("webhooks_per_s", "received", "line-1"),)),
    Chart(id="outcomes", title="Outcomes", unit="per s",
          lines=(Line("webhooks_2xx_per_s", "2xx", "line-good"),
                 Line("webhooks_4xx_per_s", "4xx", "line-warn"),
                 Line("webhooks_5xx_per_s", "5xx", "line-bad"))),
    Chart(id="publish-failures", title="Publish failures", unit="per s",
          lines=(Line("publish_failures_per_s", "publish failures", "line-bad"),
                 Line("dlq_records_per_s", "dead-lettered", "line-warn"))),
    Chart(id="dlq-depth", title="DLQ depth", unit="records",
          lines=(Line("dlq_depth", "records in the DLQ", "line-1"),)),
    Chart(id="sink-lag", title="Sink lag", unit="seconds",
          lines=(Line("sink_lag_seconds", "ClickHouse sink behind the stream", "line-1"),)),
    Chart(id="pollers", title="Poller health", unit="targets",
          lines=(Line("pollers", "targets", "line-1"),
                 Line("pollers_failing", "failing", "line-bad"),
                 Line("pollers_paused", "paused", "line-warn"))),
)  # fmt: skip


def nice_ceiling(value: float) -> float:
    """The axis' top: 1, 2 or 5 times a power of ten, at least ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power


def number(value: float) -> str:
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def draw_all(history: Mapping[str, Any]) -> list[Drawn]:
    """Every chart of ``history`` over its span, ending at its ``generated_at``."""
    end = parsed(str(history.get("generated_at", ""))) or datetime.now().astimezone()
    span = timedelta(seconds=float(history.get("span_seconds", 3600) or 3600))
    timed: list[tuple[datetime, Mapping[str, Any]]] = []
    for point in history.get("points", []):
        moment = parsed(str(point.get("time", "")))
        if moment is not None:
            timed.append((moment, point))
    return [draw(chart, timed, start=end - span, end=end) for chart in CHARTS]


def draw(
    chart: Chart,
    points: Sequence[tuple[datetime, Mapping[str, Any]]],
    *,
    start: datetime,
    end: datetime,
) -> Drawn:
    values = [
        float(point[line.key])
        for _, point in points
        for line in chart.lines
        if isinstance(point.get(line.key), int | float)
    ]
    top = nice_ceiling(max(values, default=0.0))
    span = max((end - start).total_seconds(), 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: datetime) -> float:
        share = min(max((moment - start).total_seconds() / span, 0.0), 1.0)
        return LEFT + share * plot_w

    def y(value: float) -> float:
        return TOP + plot_h - min(value / top, 1.0) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart.id}-title" preserveAspectRatio="none">',
        f'<title id="{chart.id}-title">{escape(chart.title)} ({escape(chart.unit)}), '
        "the last hour</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" '
        f'y2="{TOP + plot_h}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{number(top)}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        f'<text class="tick" x="{LEFT}" y="{HEIGHT - 6}">−{round(span / 60)} min</text>',
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">now</text>',
    ]
    latest: list[tuple[Line, float | None]] = []
    for line in chart.lines:
        path, last = _path(line.key, points, x, y)
        if path:
            parts.append(f'<path class="{line.css}" d="{path}"/>')
        latest.append((line, last))
    parts.append("</svg>")
    # Every text above is escaped, a number or one of this module's constant ids/classes.
    return Drawn(chart, Markup("".join(parts)), tuple(latest))  # nosec B704


def _path(
    key: str,
    points: Sequence[tuple[datetime, Mapping[str, Any]]],
    x: Callable[[datetime], float],
    y: Callable[[float], float],
) -> tuple[str, float | None]:
    """SVG path data for one series (a missing value starts a new segment; a lone point is
    a short tick so it shows) and its newest value."""
    commands: list[str] = []
    run: list[tuple[float, float]] = []
    last: float | None = None

    def flush() -> None:
        if len(run) == 1:
            px, py = run[0]
            commands.append(f"M{px - 1:.1f},{py:.1f}h2")
        elif run:
            commands.append("M" + "L".join(f"{px:.1f},{py:.1f}" for px, py in run))
        run.clear()

    for moment, point in points:
        value = point.get(key)
        if not isinstance(value, int | float):
            flush()
            continue
        last = float(value)
        run.append((x(moment), y(last)))
    flush()
    return "".join(commands), last
