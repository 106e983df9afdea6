"""A poller service wired to a real nats-server, a fake clock, and helpers to read back what
it published."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.js.errors import NotFoundError

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import ensure_stream, main_stream_config
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics
from ensemble_tap.poller.engine import CycleStats
from ensemble_tap.poller.scheduler import PollScheduler
from ensemble_tap.poller.service import PollerService
from ensemble_tap.state import StateStore
from tests.support.configs import make_config
from tests.support.fakes import at

DLQ_STREAM = "POLLTEST_DLQ"
START = at("2026-03-03T18:00:00Z")


class FakeClock:
    """Virtual time: sleeping advances it at once, so no test waits on the wall clock."""

    def __init__(self, wall_ns: int = START) -> None:
        self.now = 0.0
        self.wall_ns = wall_ns
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def now_ns(self) -> int:
        return self.wall_ns + int(self.now * 1e9)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class PollRig:
    service: PollerService
    broker: Broker
    config: Config
    clock: FakeClock
    metrics: Metrics
    _next_seq: int = 1
    _next_dlq_seq: int = 1
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def schedulers(self) -> list[PollScheduler]:
        return self.service.schedulers

    def scheduler(self, tenant: str = "") -> PollScheduler:
        return next(s for s in self.schedulers if s.target.tenant_id == tenant)

    async def cycle(self, tenant: str = "") -> CycleStats:
        """One attempt of that tenant's poller (failures are recorded, not raised)."""
        scheduler = self.scheduler(tenant)
        await scheduler.run_once()
        return scheduler.engine.last_stats

    async def events(self) -> list[dict[str, Any]]:
        """CloudEvents stored since the last call, with their Nats-Msg-Id as ``_msg_id``."""
        found = await self._read(self.config.nats.stream, "_next_seq")
        self.published.extend(found)
        return found

    async def dead_letters(self) -> list[dict[str, Any]]:
        """DLQ records written since the rig started (tests run one at a time)."""
        return await self._read(DLQ_STREAM, "_next_dlq_seq")

    async def _read(self, stream: str, cursor: str) -> list[dict[str, Any]]:
        js = self.broker.js
        info = await js.stream_info(stream)
        found = []
        for seq in range(max(getattr(self, cursor), info.state.first_seq), info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            value = orjson.loads(msg.data or b"{}")
            value["_subject"] = msg.subject
            value["_msg_id"] = (msg.headers or {}).get("Nats-Msg-Id", "")
            found.append(value)
        setattr(self, cursor, info.state.last_seq + 1)
        return found

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def unique_name() -> str:
    return "P" + uuid.uuid4().hex[:10].upper()


@contextlib.asynccontextmanager
async def poll_rig(
    nats_url: str,
    data_dir: str,
    providers: dict[str, Any],
    *,
    store: StateStore | None = None,
    state: dict[str, Any] | None = None,
    nats: dict[str, Any] | None = None,
    clock: FakeClock | None = None,
    stream: str | None = None,
) -> AsyncIterator[PollRig]:
    """A started (but not running) poller service; drive it with ``rig.cycle()``."""
    name = stream or unique_name()
    sections: dict[str, Any] = {
        "providers": providers,
        "nats": {"stream": name, "subject_prefix": f"poll.{name.lower()}", **(nats or {})},
    }
    if state is not None:
        sections["state"] = state
    config = make_config(nats_url, data_dir, **sections)
    metrics = Metrics()
    broker = Broker(config.nats, [nats_url], metrics)
    await broker.connect()
    await ensure_stream(broker.js, main_stream_config(config.nats))
    publisher = JetStreamPublisher(broker, config.nats, metrics)
    clock = clock or FakeClock()
    service = PollerService(
        config,
        publisher=publisher,
        dlq=DeadLetterWriter(publisher, metrics),
        metrics=metrics,
        clock=clock,
        store=store,
    )
    await service.start(run=False)
    rig = PollRig(service, broker, config, clock, metrics)
    rig._next_dlq_seq = (await broker.js.stream_info(DLQ_STREAM)).state.last_seq + 1
    try:
        yield rig
    finally:
        await service.stop()
        await broker.close()
