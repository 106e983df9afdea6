"""One ``/metrics`` for all processes: workers expose their registry on a unix socket and the
primary merges it with its own, so a scrape that lands on any process sees the service's
totals under the catalogue's names and labels (no per-process label).

Counters and histograms are summed. Gauges are summed too (each is owned by one process or
counts per process), except those in ``MIN_GAUGES``: a state that every process reports for
itself, where the service is only as good as its worst process; and ``MAX_GAUGES``: an age,
where the oldest of any process is the service's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

MIN_GAUGES = frozenset({"tap_nats_connected"})
MAX_GAUGES = frozenset({"tap_spool_oldest_age_seconds"})
FETCH_TIMEOUT = 2.0


class MetricsEndpoint:
    """A worker's side: every connection to ``path`` gets the registry's exposition text."""

    def __init__(self, registry: CollectorRegistry, path: Path) -> None:
        self.registry = registry
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(generate_latest(self.registry))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)


async def fetch_exposition(path: Path) -> bytes | None:
    """A worker's exposition text, or None when it does not answer (e.g. restarting)."""
    try:
        async with asyncio.timeout(FETCH_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                return await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None


def merge_expositions(texts: Iterable[bytes]) -> bytes:
    """One exposition with every family of ``texts``, samples of equal labels combined."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode("utf-8")):
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            samples = values.setdefault(family.name, {})
            combine = (
                min if family.name in MIN_GAUGES else max if family.name in MAX_GAUGES else _add
            )
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                previous = samples.get(key)
                samples[key] = sample.value if previous is None else combine(previous, sample.value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(families, values))
    return generate_latest(registry)


def _add(a: float, b: float) -> float:
    return a + b


class _Merged:
    def __init__(
        self,
        families: dict[str, Metric],
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]],
    ) -> None:
        self.families = families
        self.values = values

    def collect(self) -> Iterator[Metric]:
        for name, family in self.families.items():
            for (sample_name, labels), value in self.values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family
