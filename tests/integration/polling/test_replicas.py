"""Poller replicas sharing one nats-server (``state.backend: nats``): the targets spread over
the replicas, each is polled by one at a time, and when its holder dies another takes it over
within ``lease_ttl`` and one renewal, resuming where the last commit left off: every change
is in the stream exactly once, none is missing."""

from __future__ import annotations

import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import dlq_stream_config, ensure_stream, main_stream_config
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics
from ensemble_tap.poller.service import PollerService, cancel_and_wait
from tests.support.configs import make_config
from tests.support.fakes import at
from tests.support.fakes.notion import FakeNotion
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

T0 = at("2026-03-03T17:00:00Z")
SECOND = 1_000_000_000
TENANTS = ("t1", "t2", "t3", "t4")
LEASE_TTL = 3.0


@dataclass
class Replica:
    service: PollerService
    broker: Broker
    metrics: Metrics

    def holders(self) -> dict[str, Any]:
        """Tenant → the replica holding its lease, as this replica's status shows it."""
        return {s.get("tenant_id", ""): s.get("lease_holder") for s in self.service.status()}

    def gauge(self, name: str, tenant: str) -> float | None:
        labels = {"provider": "notion", "tenant": tenant}
        return self.metrics.registry.get_sample_value(name, labels)

    def polling(self) -> set[str]:
        """The tenants whose poller runs here."""
        return {key.partition("::")[2] for key in self.service._target_tasks}


def config(fake: FakeNotion, nats: NatsServer, data_dir: Path) -> Config:
    return make_config(
        nats.url,
        str(data_dir),
        providers={
            "notion": {
                "mode": "poll",
                "secret": "notion-token",
                "base_url": fake.url,
                "poll_interval": "200ms",
                "tenants": {name: {"tenant_id": name} for name in TENANTS},
            }
        },
        state={"backend": "nats", "lease_ttl": f"{LEASE_TTL:g}s"},
    )


@contextlib.asynccontextmanager
async def replica(cfg: Config, nats: NatsServer, name: str) -> AsyncIterator[Replica]:
    metrics = Metrics()
    broker = Broker(cfg.nats, [nats.url], metrics)
    await broker.connect()
    await ensure_stream(broker.js, main_stream_config(cfg.nats))
    await ensure_stream(broker.js, dlq_stream_config(cfg.nats))
    publisher = JetStreamPublisher(broker, cfg.nats, metrics)
    service = PollerService(
        cfg,
        publisher=publisher,
        dlq=DeadLetterWriter(publisher, metrics),
        metrics=metrics,
        broker=broker,
        replica=name,
    )
    await service.start()
    try:
        yield Replica(service, broker, metrics)
    finally:
        await service.stop()
        await broker.close()


async def crash(replica: Replica) -> None:
    """As SIGKILL: the pollers and the lease rounds stop, nothing is given back."""
    service = replica.service
    assert service._leasing is not None
    for task in (service._leasing, *service._target_tasks.values()):
        await cancel_and_wait(task)
    service._target_tasks.clear()
    service.keeper = None
    await replica.broker.nc.close()


async def events(nats: NatsServer, cfg: Config) -> list[tuple[str, str, str, str]]:
    stored = await stored_messages(nats.url, cfg.nats.stream)
    found = []
    for message in stored:
        event = message.json()
        data = event["data"]
        found.append((data.get("tenant_id", ""), data["entity_id"], data["action"],
                      str(data["snapshot"]["properties"]["title"])))  # fmt: skip
    return found


async def test_replicas_share_targets_and_take_over(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    async with FakeNotion() as fake:
        fake.put("page-1", T0, title="v1")
        cfg = config(fake, private_nats, tmp_path / "data")
        every = set(TENANTS) | {""}
        async with (
            replica(cfg, private_nats, "replica-a") as a,
            replica(cfg, private_nats, "replica-b") as b,
        ):
            # Spread: each polls some, together all, never both the same target.
            await eventually(lambda: a.polling() | b.polling() == every, timeout=15)
            await eventually(lambda: 2 <= len(a.polling()) <= 3 and 2 <= len(b.polling()) <= 3,
                             timeout=15)  # fmt: skip
            assert not a.polling() & b.polling()

            # Both statuses show who holds what, and since when.
            def statuses_agree() -> bool:
                held = {t: "replica-a" if t in a.polling() else "replica-b" for t in every}
                return a.holders() == b.holders() == held

            await eventually(statuses_agree, timeout=10)
            # Each target's health gauges come from the replica polling it only.
            for r in (a, b):
                reported = {t for t in every if r.gauge("tap_poller_stuck", t) is not None}
                assert reported == r.polling()
            assert all("lease_since" in s for s in a.service.status())
            created = [(t, "page-1", "created", "v1") for t in sorted(every)]

            async def all_created() -> bool:
                return sorted(await events(private_nats, cfg)) == created

            await eventually(all_created, timeout=15)  # once each, whoever polled it

            # a dies; the API changes meanwhile; b takes every target over and resumes.
            await crash(a)
            fake.put("page-1", T0 + SECOND, title="v2")
            await eventually(lambda: b.polling() == every,
                             timeout=LEASE_TTL + LEASE_TTL / 3 + 3)  # fmt: skip
            assert set(b.holders().values()) == {"replica-b"}
            updated = [(t, "page-1", "updated", "v2") for t in sorted(every)]

            async def all_updated() -> bool:
                return sorted(await events(private_nats, cfg)) == sorted(created + updated)

            await eventually(all_updated, timeout=15)
    found = await events(private_nats, cfg)
    assert [key for key, count in Counter(found).items() if count > 1] == []


NO_JETSTREAM = "accounts { APP { users [{user: tap, password: tap-pw}] } }\n"
WITH_JETSTREAM = "accounts { APP { jetstream: enabled, users [{user: tap, password: tap-pw}] } }\n"


async def test_buckets_are_retried_until_jetstream_answers(tmp_path: Path) -> None:
    """JetStream refusing at start (here: not enabled for the account until the server's
    configuration is reloaded; in a cluster: no meta leader yet) is retried with backoff;
    the pollers start once it answers."""
    server = NatsServer(tmp_path / "nats", config=NO_JETSTREAM).start()
    try:
        async with FakeNotion() as fake:
            url = f"nats://tap:tap-pw@127.0.0.1:{server.port}"
            cfg = config(fake, server, tmp_path / "data")
            cfg = cfg.model_copy(update={"nats": cfg.nats.model_copy(update={"url": url})})
            metrics = Metrics()
            broker = Broker(cfg.nats, [url], metrics)
            await broker.connect()
            publisher = JetStreamPublisher(broker, cfg.nats, metrics)
            service = PollerService(cfg, publisher=publisher,
                                    dlq=DeadLetterWriter(publisher, metrics),
                                    metrics=metrics, broker=broker, replica="r")  # fmt: skip
            try:
                await service.start()
                await eventually(lambda: "jetstream" in service.setup_error.lower(), timeout=10)
                assert service.keeper is None and service._leasing is not None
                assert not service._leasing.done()
                assert {s.get("lease_holder", "?") for s in service.status()} == {None}
                # Enabled by a configuration reload: the connection stays up.
                (server.store_dir / "server.conf").write_text(WITH_JETSTREAM)
                assert server.process is not None
                server.process.send_signal(signal.SIGHUP)
                await eventually(
                    lambda: service.keeper is not None and len(service.keeper.held()) == 5,
                    timeout=20,
                )
                assert service.setup_error == ""
            finally:
                await service.stop()
                await broker.close()
    finally:
        server.stop()
