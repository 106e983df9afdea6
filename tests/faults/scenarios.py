"""The fault scenarios, shared by the tests (tests/faults/test_*.py, small) and the long
variants (bench/faults.py, ``Scale`` from the command line).

Every scenario runs real processes — nats-server, ``ensemble-tap serve`` (and ``--role``
processes), the chdb-backed ClickHouse HTTP adapter — sends load with ``Sender``, injects
its fault mid-load, then returns a ``FaultReport``. Everything it started is stopped in a
``finally``. It raises ``AssertionError`` when the run cannot say anything (a process that
should have kept running died, a kill that did not hit the load…); lost and duplicated
events are figures of the report, for the caller to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from ensemble_tap.sink.backends import embedded_path
from ensemble_tap.sink.jetstream import consumer_info
from tests.faults.harness import (
    PROVIDER,
    SECRET,
    Fault,
    FaultReport,
    Sender,
    Stored,
    clickhouse_copies,
    clock,
    jetstream_copies,
    make_deliveries,
    report,
)
from tests.support.clickhouse_http import ClickHouseHttp
from tests.support.nats_server import NatsServer
from tests.support.service_process import ServiceProcess
from tests.support.sink import open_chdb

STREAM = "ENSEMBLE_TAP"
CONSUMER = "tap_clickhouse_sink"
TABLE = "`ensemble`.`tap_events`"

# Service config per mode of the broker-outage scenario (True: with the local spool). With
# the spool the sender sees 202s during the outage
# instead of 503s, so its recovery figure (first 2xx after the outage) says little there;
# the check waits for the spool to drain into the stream before counting.
SPOOL_CONFIG: dict[bool, dict[str, Any]] = {
    False: {},
    True: {"server": {"spool": {"enabled": True}}},
}

# The sink settings of the sink scenarios: small batches flushed often, and deliveries a
# killed sink held come back after 2 s (the default, 30 s, would only make them longer).
SINK_SETTINGS = {
    "flush_interval": "100ms",
    "batch_size": 100,
    "consumer_fetch_batch_size": 100,
    "consumer_fetch_max_wait": "100ms",
    "consumer_ack_wait": "2s",
    "insert_timeout": "1s",
}


@dataclass(slots=True, frozen=True)
class Scale:
    """How big a run is. ``restart_after``: seconds between a SIGKILL and the restart;
    ``outage``: seconds a broker or ClickHouse stays down (or the broker stays absent)."""

    events: int = 400
    rate: float = 200.0
    connections: int = 8
    restart_after: float = 0.5
    outage: float = 3.0
    deadline: float = 120.0

    @property
    def fault_at(self) -> int:
        """Accepted deliveries (or stored events) before the fault: a quarter of the load."""
        return max(self.events // 4, 1)


@dataclass
class Bed:
    """Everything a scenario started, stopped in reverse order on exit."""

    workdir: Path
    broker: NatsServer = field(init=False)
    services: list[ServiceProcess] = field(default_factory=list)
    clickhouse: ClickHouseHttp | None = None

    def __post_init__(self) -> None:
        self.broker = NatsServer(self.workdir / "nats")

    def service(self, name: str, roles: tuple[str, ...] = (), **sections: Any) -> ServiceProcess:
        config: dict[str, Any] = {
            "data_dir": str(self.workdir / f"{name}-data"),
            "log_level": "warning",
            "nats": {"url": self.broker.url, "reconnect_wait": "250ms", "connect_timeout": "1s"},
            "providers": {PROVIDER: {"secret": SECRET}},
        }
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value}
        service = ServiceProcess(self.workdir, config, roles, name)
        self.services.append(service)
        return service

    async def close(self) -> None:
        """Every step runs even when one fails (the first error is raised at the end)."""
        steps: list[Callable[[], Awaitable[Any]]] = [s.stop for s in reversed(self.services)]
        if self.clickhouse is not None:
            steps.append(functools.partial(asyncio.to_thread, self.clickhouse.close))
        steps.append(functools.partial(asyncio.to_thread, self.broker.stop))
        error: BaseException | None = None
        for step in steps:
            try:
                await step()
            except BaseException as exc:
                error = error or exc
        for service in self.services:  # nothing of a failed stop may survive
            service.kill_leftovers()
        if error is not None:
            raise error


@contextlib.asynccontextmanager
async def bed(workdir: Path) -> AsyncIterator[Bed]:
    setup = Bed(workdir)
    try:
        yield setup
    finally:
        await setup.close()


@contextlib.asynccontextmanager
async def sending(sender: Sender) -> AsyncIterator[asyncio.Task[None]]:
    """Run the sender in the background; on leaving, wait for it (or cancel it when the
    scenario failed)."""
    task = asyncio.create_task(sender.run())
    try:
        yield task
    except BaseException:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    await task


def _sender(url: str, scale: Scale, tag: str) -> Sender:
    deliveries = make_deliveries(scale.events, tag)
    return Sender(url, deliveries, scale.rate, scale.connections, scale.deadline)


async def _wait_stream_messages(url: str, count: int, timeout: float) -> None:
    """Wait (bounded) until the stream holds ``count`` messages: accepted events a spool
    still holds reach it after the outage. Returns anyway at the deadline: what is
    missing then is counted as lost."""
    nc = await nats.connect(url)
    try:
        deadline = clock() + timeout
        while (await nc.jetstream().stream_info(STREAM)).state.messages < count:
            if clock() > deadline:
                return
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


def _alive(service: ServiceProcess) -> None:
    if not service.alive():
        raise AssertionError(f"{service.name} died during the scenario:\n{service.log_tail()}")


# ---------------------------------------------------------------------------- the broker


async def broker_sigkill(workdir: Path, scale: Scale) -> FaultReport:
    """nats-server SIGKILLed mid-load and restarted on the same port and store; the
    service keeps running. In-flight publishes wait for the reconnect (publish budget)."""
    async with bed(workdir) as setup:
        await asyncio.to_thread(setup.broker.start)
        service = setup.service("service").start()
        await service.wait_ready()
        sender = _sender(service.url, scale, "broker-sigkill")
        async with sending(sender):
            await sender.wait_accepted(scale.fault_at)
            await sender.wait_in_flight()
            started = clock()
            setup.broker.kill()
            await asyncio.sleep(scale.restart_after)
            await asyncio.to_thread(setup.broker.start)
            fault = Fault(started, clock())
        _alive(service)
        stored = await jetstream_copies(setup.broker.url, STREAM)
    return report("broker-sigkill", sender.deliveries, {"jetstream": stored}, fault)


async def broker_outage(workdir: Path, scale: Scale, spool: bool = False) -> FaultReport:
    """nats-server stopped for ``scale.outage`` s, longer than the 1 s publish budget:
    without the spool, deliveries get 503 and the sender retries them."""
    name = "broker-outage-spool" if spool else "broker-outage"
    async with bed(workdir) as setup:
        await asyncio.to_thread(setup.broker.start)
        service = setup.service(
            "service", nats={"publish_timeout": "1s"}, **SPOOL_CONFIG[spool]
        ).start()
        await service.wait_ready()
        sender = _sender(service.url, scale, name)
        async with sending(sender):
            await sender.wait_accepted(scale.fault_at)
            started = clock()
            await asyncio.to_thread(setup.broker.stop)
            await asyncio.sleep(scale.outage)
            await asyncio.to_thread(setup.broker.start)
            fault = Fault(started, clock())
        _alive(service)
        await _wait_stream_messages(setup.broker.url, sender.accepted, scale.deadline)
        stored = await jetstream_copies(setup.broker.url, STREAM)
    return report(name, sender.deliveries, {"jetstream": stored}, fault)


async def broker_absent_at_start(workdir: Path, scale: Scale) -> FaultReport:
    """The service starts while no broker listens (it serves at once, 503 until NATS
    comes); the broker starts ``scale.outage`` s after the sender."""
    async with bed(workdir) as setup:
        service = setup.service("service").start()
        started = clock()
        await service.wait_status("/livez")
        sender = _sender(service.url, scale, "broker-absent")
        async with sending(sender):
            await asyncio.sleep(scale.outage)
            if sender.accepted:
                raise AssertionError("deliveries were accepted without a broker")
            await asyncio.to_thread(setup.broker.start)
            fault = Fault(started, clock())
        _alive(service)
        stored = await jetstream_copies(setup.broker.url, STREAM)
    return report("broker-absent-at-start", sender.deliveries, {"jetstream": stored}, fault)


# ---------------------------------------------------------------------------- the service


async def service_sigkill(workdir: Path, scale: Scale, workers: int = 1) -> FaultReport:
    """``serve`` SIGKILLed mid-load (with workers: the primary; its workers get SIGTERM
    from the parent-death signal and finish their requests), restarted ``restart_after``
    s after every process of it is gone. Recovery includes the restart."""
    name = "service-sigkill" if workers == 1 else f"service-sigkill-{workers}-workers"
    async with bed(workdir) as setup:
        await asyncio.to_thread(setup.broker.start)
        service = setup.service("service", server={"workers": workers}).start()
        await service.wait_ready()
        sender = _sender(service.url, scale, name)
        async with sending(sender):
            await sender.wait_accepted(scale.fault_at)
            await sender.wait_in_flight()
            started = clock()
            await service.kill()
            await asyncio.sleep(scale.restart_after)
            service.start()
            fault = Fault(started, clock())
        _alive(service)
        stored = await jetstream_copies(setup.broker.url, STREAM)
    return report(name, sender.deliveries, {"jetstream": stored}, fault)


async def spool_sigkill(workdir: Path, scale: Scale) -> FaultReport:
    """With the spool, the broker stopped: deliveries are answered 202 (spooled); the
    service is SIGKILLed while spooling and restarted while the broker is still down, then
    the broker comes back. Every spooled event (fsync'd before its 202) is drained once."""
    name = "spool-sigkill"
    async with bed(workdir) as setup:
        await asyncio.to_thread(setup.broker.start)
        service = setup.service(
            "service", nats={"publish_timeout": "1s"}, **SPOOL_CONFIG[True]
        ).start()
        await service.wait_ready()
        sender = _sender(service.url, scale, name)
        async with sending(sender):
            await sender.wait_accepted(scale.fault_at)
            started = clock()
            await asyncio.to_thread(setup.broker.stop)
            # A publish budget later, every connection's delivery is spooled: two rounds.
            await sender.wait_accepted(sender.accepted + 2 * scale.connections)
            await sender.wait_in_flight()
            await service.kill()
            await asyncio.sleep(scale.restart_after)
            service.start()
            await asyncio.sleep(scale.outage)
            await asyncio.to_thread(setup.broker.start)
            fault = Fault(started, clock())
        _alive(service)
        await _wait_stream_messages(setup.broker.url, sender.accepted, scale.deadline)
        stored = await jetstream_copies(setup.broker.url, STREAM)
    return report(name, sender.deliveries, {"jetstream": stored}, fault)


# ---------------------------------------------------------------------------- the sink


async def _stream_last_seq(nc: Client) -> int:
    info = await nc.jetstream().stream_info(STREAM)
    return int(info.state.last_seq)


async def _ack_floor(nc: Client) -> int:
    info = await consumer_info(nc, STREAM, CONSUMER)
    return 0 if info is None else int(info["ack_floor"]["stream_seq"])


async def _wait_ack_floor(nc: Client, target: int, timeout: float) -> float:
    """Wait until the sink acked every message up to ``target``; returns when (clock)."""
    deadline = clock() + timeout
    while await _ack_floor(nc) < target:
        if clock() > deadline:
            raise AssertionError(f"the sink did not reach stream sequence {target}")
        await asyncio.sleep(0.02)
    return clock()


async def _settle(nc: Client, timeout: float) -> None:
    """Wait until the sink acked the whole stream (nothing pending, nothing unacked)."""
    deadline = clock() + timeout
    while True:
        info = await consumer_info(nc, STREAM, CONSUMER)
        last = await _stream_last_seq(nc)
        if (
            info is not None
            and info["ack_floor"]["stream_seq"] >= last
            and info["num_pending"] == 0
            and info["num_ack_pending"] == 0
        ):
            return
        if clock() > deadline:
            raise AssertionError(f"the sink did not settle: {info}")
        await asyncio.sleep(0.05)


async def _sink_fault(
    name: str,
    setup: Bed,
    ingress: ServiceProcess,
    inject: Callable[[Client], Awaitable[tuple[Fault, str]]],
    scale: Scale,
) -> tuple[Sender, Fault, float, int, str]:
    """Send through ``ingress``; once a quarter of the load is stored, ``inject`` the fault
    (it returns the fault's times and a note); then wait for the sink to ack everything the
    stream held when the fault ended (the recovery) and then the whole stream."""
    sender = _sender(ingress.url, scale, name)
    nc = await nats.connect(setup.broker.url)
    try:
        async with sending(sender):
            await _wait_ack_floor(nc, scale.fault_at, scale.deadline)
            floor = await _ack_floor(nc)
            fault, note = await inject(nc)
            target = await _stream_last_seq(nc)
            recovered = await _wait_ack_floor(nc, target, scale.deadline)
        await _settle(nc, scale.deadline)
        # Not acked when the fault began, or stored during it: what the fault could hit.
        affected = target - floor
    finally:
        await nc.close()
    return sender, fault, recovered - fault.ended, affected, note


async def sink_sigkill(workdir: Path, scale: Scale) -> FaultReport:
    """A ``--role sink`` process (embedded chdb) SIGKILLed while it drains what a
    ``--role ingress`` process accepts, restarted ``restart_after`` s later; what it held
    unacked comes back after ``consumer_ack_wait`` (2 s)."""
    name = "sink-sigkill"
    async with bed(workdir) as setup:
        await asyncio.to_thread(setup.broker.start)
        ingress = setup.service("ingress", ("ingress",)).start()
        sink = setup.service(
            "sink", ("sink",), clickhouse={"backend": "embedded", **SINK_SETTINGS}
        ).start()
        await asyncio.gather(ingress.wait_ready(), sink.wait_ready())

        async def kill_and_restart(nc: Client) -> tuple[Fault, str]:
            started = clock()
            await sink.kill()
            info = await consumer_info(nc, STREAM, CONSUMER)
            assert info is not None
            left = int(info["num_pending"]) + int(info["num_ack_pending"])
            if not left:
                raise AssertionError(f"the kill left the sink nothing to redo: {info}")
            await asyncio.sleep(scale.restart_after)
            sink.start()
            note = f"{info['num_ack_pending']} delivered but unacked at the kill"
            return Fault(started, clock()), note

        sender, fault, recovery, affected, note = await _sink_fault(
            name, setup, ingress, kill_and_restart, scale
        )
        _alive(ingress)
        if (code := await sink.stop()) != 0:
            raise AssertionError(f"the restarted sink exited {code}:\n{sink.log_tail()}")
        stores = {"jetstream": await jetstream_copies(setup.broker.url, STREAM)}
        with open_chdb(embedded_path(sink.config["data_dir"])) as backend:
            stores["clickhouse"] = await clickhouse_copies(backend.query, TABLE)
    return _sink_report(name, sender, stores, fault, recovery, affected, note)


async def clickhouse_outage(workdir: Path, scale: Scale) -> FaultReport:
    """The ClickHouse server (the chdb-backed HTTP adapter) down for ``scale.outage`` s
    while events flow: the sink NAKs, probes, resumes; ingress is not affected."""
    name = "clickhouse-outage"
    async with bed(workdir) as setup:
        await asyncio.to_thread(setup.broker.start)
        clickhouse = setup.clickhouse = ClickHouseHttp(workdir / "chdb").start()
        service = setup.service(
            "service", clickhouse={"addr": clickhouse.addr, **SINK_SETTINGS}
        ).start()
        await service.wait_ready()

        async def outage(nc: Client) -> tuple[Fault, str]:
            started = clock()
            await asyncio.to_thread(clickhouse.stop)
            await asyncio.sleep(scale.outage)
            await asyncio.to_thread(clickhouse.start)
            return Fault(started, clock()), ""

        sender, fault, recovery, affected, note = await _sink_fault(
            name, setup, service, outage, scale
        )
        _alive(service)
        stores = {"jetstream": await jetstream_copies(setup.broker.url, STREAM)}

        async def query(sql: str) -> list[dict[str, Any]]:
            return await asyncio.to_thread(clickhouse.sql, sql)

        stores["clickhouse"] = await clickhouse_copies(query, TABLE)
    return _sink_report(name, sender, stores, fault, recovery, affected, note)


def _sink_report(
    name: str,
    sender: Sender,
    stores: dict[str, Stored],
    fault: Fault,
    recovery: float,
    affected: int,
    note: str,
) -> FaultReport:
    return report(
        name,
        sender.deliveries,
        stores,
        fault,
        recovery_seconds=recovery,
        recovery_measure="sink acked all the stream held at the fault's end",
        affected=affected,
        notes=note,
    )


# ---------------------------------------------------------------------------- catalogue

Scenario = Callable[[Path, Scale], Awaitable[FaultReport]]


def catalogue() -> dict[str, Scenario]:
    """Every scenario by name (bench/faults.py runs them in this order)."""
    scenarios: dict[str, Scenario] = {"broker-sigkill": broker_sigkill}
    for spool in sorted(SPOOL_CONFIG):
        name = "broker-outage-spool" if spool else "broker-outage"
        scenarios[name] = functools.partial(broker_outage, spool=spool)
    scenarios["broker-absent-at-start"] = broker_absent_at_start
    scenarios["service-sigkill"] = service_sigkill
    scenarios["service-sigkill-2-workers"] = functools.partial(service_sigkill, workers=2)
    scenarios["spool-sigkill"] = spool_sigkill
    scenarios["sink-sigkill"] = sink_sigkill
    scenarios["clickhouse-outage"] = clickhouse_outage
    return scenarios
