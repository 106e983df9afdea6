"""Ensemble Tap replicas against the test cluster, and a load balancer's view of them.

``replica()`` is one ``ensemble-tap serve`` process (tests/support/service_process.py) whose
``nats.url`` lists every node and whose streams have three replicas. ``Balancer`` sends
signed webhooks (tests/faults/harness.py's deliveries) round-robin to the replicas and,
like a load balancer with retries, sends a delivery answered 503 or not answered at all to
the next replica; it counts every answer, so a test can say which it tolerates.
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
    """Round-robin over ``replicas``; a 503 or a transport error moves the delivery to the
    next replica, any other answer ends it. ``answers`` counts every answer by status (or
    exception name), ``accepted`` holds the 202'd event ids."""

    def __init__(self, replicas: list[ServiceProcess], deliveries: list[Delivery]) -> None:
        self.replicas = replicas
        self.deliveries = deliveries
        self.answers: collections.Counter[str] = collections.Counter()
        self.accepted: set[str] = set()
        self.refused: dict[str, str] = {}  # event id → the answer that ended it (not 202)
        self._turn = 0

    async def run(self, *, rate: float, connections: int = 6, deadline: float = 90) -> None:
        """Send every delivery, ``rate`` per second at most; each is retried on the next
        replica until 202, another final answer, or ``deadline`` seconds after the start."""
        started = time.monotonic()
        queue: asyncio.Queue[tuple[int, Delivery]] = asyncio.Queue()
        for item in enumerate(self.deliveries):
            queue.put_nowait(item)
        limits = httpx.Limits(max_connections=connections * len(self.replicas))
        async with httpx.AsyncClient(limits=limits, timeout=ATTEMPT_TIMEOUT) as client:
            await asyncio.gather(
                *(self._work(client, queue, started, rate, deadline) for _ in range(connections))
            )

    async def _work(
        self,
        client: httpx.AsyncClient,
        queue: asyncio.Queue[tuple[int, Delivery]],
        started: float,
        rate: float,
        deadline: float,
    ) -> None:
        while not queue.empty():
            index, delivery = queue.get_nowait()
            if (wait := started + index / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self._deliver(client, delivery, started + deadline)

    async def _deliver(self, client: httpx.AsyncClient, delivery: Delivery, until: float) -> None:
        while time.monotonic() < until:
            target = self.replicas[self._turn % len(self.replicas)]
            self._turn += 1
            try:
                response = await client.post(
                    f"{target.url}/webhooks/{PROVIDER}",
                    content=delivery.body,
                    headers=delivery.headers,
                )
            except httpx.TransportError as exc:
                self.answers[type(exc).__name__] += 1
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
        return f"{len(self.accepted)}/{len(self.deliveries)} accepted; answers: {answers}"


async def stored_copies(cluster: NatsCluster) -> collections.Counter[str]:
    """Copies of each CloudEvent id in the stream, read through a living node (retried
    while the stream has no leader)."""
    deadline = time.monotonic() + 30
    while True:
        url = ",".join(node.url for node in cluster.living)
        try:
            return (await jetstream_copies(url, STREAM)).copies
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
