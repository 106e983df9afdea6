"""The last hour of the service at a glance (``GET /admin/metrics/history``, the console's
overview): one point every ``RESOLUTION`` seconds, kept in memory for ``SPAN``.

Each point is read from the service's own ``/metrics`` exposition (in the primary, the
workers' merged in), so the figures are the ones Prometheus scrapes, not a second count, and
the webhook path does no extra work: counters become rates between two samples, gauges are
taken as they are. The DLQ's depth is the dead-letter stream's message count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ensemble_tap.events import format_time_ns
from ensemble_tap.observability import get_logger

RESOLUTION = 10.0
SPAN = 3600.0
log = get_logger("ensemble_tap.admin")

# Series of the answer, in this order. Rates are per second over the last interval.
SERIES = (
    "webhooks_per_s",
    "webhooks_2xx_per_s",
    "webhooks_4xx_per_s",
    "webhooks_5xx_per_s",
    "publish_failures_per_s",
    "dlq_records_per_s",
    "dlq_depth",
    "sink_lag_seconds",
    "pollers",
    "pollers_failing",
    "pollers_paused",
)
Reading = dict[str, float]


def read_exposition(text: str) -> Reading:
    """The totals and gauges the series are made of, from a Prometheus text exposition."""
    found: Reading = collections.defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "tap_webhooks_received_total":
                found["webhooks"] += value
                status = labels.get("status", "")
                found[f"webhooks_{status[:1]}xx"] += value if status[:1] in "245" else 0.0
            elif name == "tap_events_publish_failures_total":
                found["publish_failures"] += value
            elif name == "tap_dlq_records_total":
                found["dlq_records"] += value
            elif name == "tap_clickhouse_consumer_lag_seconds":
                found["sink_lag_seconds"] = max(found["sink_lag_seconds"], value)
            elif name == "tap_poller_consecutive_failures":
                found["pollers"] += 1
                found["pollers_failing"] += 1 if value > 0 else 0
            elif name == "tap_poller_paused":
                found["pollers_paused"] += value
    return dict(found)


class MetricsHistory:
    def __init__(
        self,
        read: Callable[[], Awaitable[bytes]],
        *,
        dlq_depth: Callable[[], Awaitable[int]] | None = None,
        resolution: float = RESOLUTION,
        span: float = SPAN,
    ) -> None:
        self.read = read
        self.dlq_depth = dlq_depth
        self.resolution = resolution
        self.points: collections.deque[tuple[int, dict[str, float | None]]] = collections.deque(
            maxlen=max(1, int(span / resolution))
        )
        self._last: tuple[float, Reading] | None = None

    async def run(self) -> None:
        """Sample every ``resolution`` seconds until cancelled; a failed sample is a gap."""
        while True:
            try:
                await self.sample()
            except Exception as exc:  # the next sample may work; the chart shows a gap
                log.warning("metrics history sample failed", error=str(exc) or repr(exc))
            await asyncio.sleep(self.resolution)

    async def sample(self) -> None:
        text = (await self.read()).decode()
        depth = None
        if self.dlq_depth is not None:
            with contextlib.suppress(Exception):  # NATS away: the depth is unknown, not 0
                depth = float(await self.dlq_depth())
        self.add(read_exposition(text), at=time.time(), dlq_depth=depth)

    def add(self, reading: Reading, *, at: float, dlq_depth: float | None = None) -> None:
        """A point from ``reading``: rates against the previous reading (none for the first,
        and none across a counter reset, when a restarted worker's counters start over)."""
        previous, self._last = self._last, (at, reading)
        point: dict[str, float | None] = dict.fromkeys(SERIES)
        if previous is not None and at > previous[0]:
            elapsed = at - previous[0]
            for name in ("webhooks", "webhooks_2xx", "webhooks_4xx", "webhooks_5xx",
                         "publish_failures", "dlq_records"):  # fmt: skip
                delta = reading.get(name, 0.0) - previous[1].get(name, 0.0)
                point[f"{name}_per_s"] = round(delta / elapsed, 3) if delta >= 0 else None
        point["dlq_depth"] = dlq_depth
        for name in ("sink_lag_seconds", "pollers", "pollers_failing", "pollers_paused"):
            point[name] = reading.get(name, 0.0)
        self.points.append((int(at * 1e9), point))

    def as_json(self) -> dict[str, Any]:
        """``points`` oldest first, each its ``time`` (RFC 3339) and the series known then
        (an unknown value, such as the first rate, is left out, never null)."""
        return {
            "resolution_seconds": self.resolution,
            "span_seconds": self.resolution * (self.points.maxlen or 0),
            "series": list(SERIES),
            "points": [
                {"time": format_time_ns(at)} | {k: v for k, v in point.items() if v is not None}
                for at, point in self.points
            ],
        }


def empty_history() -> dict[str, Any]:
    """The answer of an app that keeps no history (no sampler runs in it)."""
    return {"resolution_seconds": RESOLUTION, "span_seconds": SPAN, "series": list(SERIES),
            "points": []}  # fmt: skip
