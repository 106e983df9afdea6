"""Ensemble Tap replicas against the test cluster, and a load balancer's view of them.

``replica()`` is one ``ensemble-tap serve`` process (tests/support/service_process.py) whose
``nats.url`` lists every node and whose streams have three replicas. ``Balancer`` sends
signed webhooks (tests/faults/harness.py's deliveries) round-robin to the ready replicas,
as a load balancer with health checks and retries would; it counts every answer, so a test
can say which it tolerates.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import httpx

from tests.faults.harness import PROVIDER, SECRET, Delivery, jetstream_copies
from tests.support.nats_cluster import NatsCluster
from tests.support.service_process import ServiceProcess

STREAM = "ENSEMBLE_TAP"
RETRY_PAUSE = 0.05  # before a delivery goes to the next replica
ATTEMPT_TIMEOUT = 10.0
HEALTH_INTERVAL = 0.25  # the balancer's readiness checks
DELIVERY_DEADLINE = 60.0  # a delivery not accepted by then is given up (and reported)


# Figures of the cluster tests (503s, holds, rows per replica), printed at the end of the
# run by conftest.py's terminal summary: read in every run, not only when one fails.
FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)


def replica(
    cluster: NatsCluster, workdir: Path, name: str, roles: tuple[str, ...] = (), **sections: Any
) -> ServiceProcess:
    """A replica (not started): streams with three replicas; ``sections`` merged over."""
    config: dict[str, Any] = {
        "data_dir": str(workdir / f"{name}-data"),
        "log_level": "warning",
        "nats": {
            "url": cluster.url,
            "stream_replicas": 3,
            "reconnect_wait": "250ms",
            "connect_timeout": "1s",
        },
        "providers": {PROVIDER: {"secret": SECRET}},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return ServiceProcess(workdir, config, roles, name)


async def stop_all(replicas: list[ServiceProcess]) -> None:
    """SIGTERM every replica together (teardown: the first error is raised at the end)."""
    results = await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class Balancer:
    """A load balancer in front of ``replicas`` and the SaaS senders behind it.

    It health-checks every replica's ``/readyz`` every ``HEALTH_INTERVAL`` and routes each
    delivery round-robin to the ones that answered 200. A delivery answered 503, or whose
    connection could not be made (nothing was sent), goes to the next replica, as a load
    balancer's retry would. A connection lost after the request was sent is what a load
    balancer answers 502 for: counted as ``502`` (a sender retries it later, so it is
    retried too). While no replica is ready a delivery is held (``held``). ``answers``
    counts every answer, ``accepted`` holds the 202'd ids."""

    def __init__(self, replicas: list[ServiceProcess], deliveries: list[Delivery]) -> None:
        self.replicas = replicas
        self.deliveries = deliveries
        self.answers: collections.Counter[str] = collections.Counter()
        self.accepted: set[str] = set()
        self.refused: dict[str, str] = {}  # event id → the answer that ended it (not 202)
        self.held: set[str] = set()  # deliveries that waited for a ready replica
        self.healthy: list[ServiceProcess] = list(replicas)
        self.sent = 0  # deliveries begun
        self._turn = 0

    async def run(self, *, rate: float, stop: asyncio.Event, connections: int = 6) -> None:
        """Send deliveries, ``rate`` per second at most, until ``stop`` is set (or all are
        sent); each begun delivery is retried until 202, another final answer or
        ``DELIVERY_DEADLINE``."""
        started = time.monotonic()
        limits = httpx.Limits(max_connections=connections * len(self.replicas))
        async with httpx.AsyncClient(limits=limits, timeout=ATTEMPT_TIMEOUT) as client:
            checker = asyncio.create_task(self._check_health(client))
            try:
                await asyncio.gather(
                    *(self._work(client, started, rate, stop) for _ in range(connections))
                )
            finally:
                checker.cancel()

    async def _check_health(self, client: httpx.AsyncClient) -> None:
        while True:
            answers = await asyncio.gather(
                *(client.get(f"{r.url}/readyz", timeout=1) for r in self.replicas),
                return_exceptions=True,
            )
            self.healthy = [
                replica
                for replica, answer in zip(self.replicas, answers, strict=True)
                if isinstance(answer, httpx.Response) and answer.status_code == 200
            ]
            await asyncio.sleep(HEALTH_INTERVAL)

    async def _work(
        self, client: httpx.AsyncClient, started: float, rate: float, stop: asyncio.Event
    ) -> None:
        while not stop.is_set() and self.sent < len(self.deliveries):
            index, self.sent = self.sent, self.sent + 1
            if (wait := started + index / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self._deliver(client, self.deliveries[index])

    def _next_replica(self) -> ServiceProcess | None:
        healthy = self.healthy
        if not healthy:
            return None
        self._turn += 1
        return healthy[self._turn % len(healthy)]

    async def _deliver(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        until = time.monotonic() + DELIVERY_DEADLINE
        while time.monotonic() < until:
            target = self._next_replica()
            if target is None:  # none ready: the balancer holds the request
                self.held.add(delivery.event_id)
                await asyncio.sleep(RETRY_PAUSE)
                continue
            try:
                response = await client.post(
                    f"{target.url}/webhooks/{PROVIDER}",
                    content=delivery.body,
                    headers=delivery.headers,
                )
            except httpx.ConnectError:  # nothing sent: the balancer tries the next one
                self.answers["connect refused"] += 1
            except httpx.TransportError:  # sent, answer lost: the balancer answers 502
                self.answers["502"] += 1
            else:
                self.answers[str(response.status_code)] += 1
                if response.status_code == 202:
                    self.accepted.add(delivery.event_id)
                    return
                if response.status_code != 503:
                    self.refused[delivery.event_id] = str(response.status_code)
                    return
            await asyncio.sleep(RETRY_PAUSE)
        self.refused[delivery.event_id] = "deadline"

    def server_errors(self) -> dict[str, int]:
        """5xx answers other than 503 (the documented 'not now, retry')."""
        return {
            status: count
            for status, count in self.answers.items()
            if status.isdigit() and status.startswith("5") and status != "503"
        }

    def summary(self) -> str:
        answers = ", ".join(f"{status}×{count}" for status, count in sorted(self.answers.items()))
        held = f"; {len(self.held)} held while no replica was ready" if self.held else ""
        return f"{len(self.accepted)}/{self.sent} accepted; answers: {answers}{held}"

    async def wait_accepted_more(self, count: int, timeout: float = 90) -> None:
        """Until ``count`` more deliveries were accepted (to time a fault within the load)."""
        wanted = len(self.accepted) + count
        deadline = time.monotonic() + timeout
        while len(self.accepted) < wanted:
            assert time.monotonic() < deadline, f"the load stalled: {self.summary()}"
            await asyncio.sleep(0.05)


async def stored_copies(cluster: NatsCluster) -> collections.Counter[str]:
    """Copies of each CloudEvent id in the stream, read through a living node (retried
    while the stream has no leader)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return (await jetstream_copies(cluster.living[0].url, STREAM)).copies
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
