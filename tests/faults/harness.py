"""What every fault scenario shares: a sender that behaves like a SaaS provider, the check
of what was stored, and the report.

The **sender** delivers N unique signed generic webhooks (provider ``acme``, each with its
own ``X-Event-Id`` and body) at a bounded rate over a few connections and retries each
delivery until it gets a 2xx — on connection errors, timeouts (10 s), 5xx, 408 and 429 — as
Stripe or Shopify do, but with a compressed backoff (50 ms doubling to 250 ms; it ignores
``Retry-After``) so a scenario lasts seconds. Another 4xx ends the delivery (a sender would
give up): it counts as lost. Every retry of a delivery sends the same bytes.

**Verification** reads back what was stored: the stream, counted by CloudEvent id (the
``X-Event-Id``; ``Nats-Msg-Id`` is ``acme::<id>``), and for sink scenarios the ClickHouse
table queried with ``FINAL`` (what a query sees). ``lost`` = ids accepted but not stored,
plus ids never accepted by the deadline; ``duplicated`` = ids stored more than once.
Copies that ``FINAL`` hides (rows of one key not merged yet) are reported apart as
``unmerged_rows``, not counted: ReplacingMergeTree removes them in its merges.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from tests.support.jetstream import stored_messages
from tests.support.signing import generic_headers
from tests.support.waiting import eventually

PROVIDER = "acme"
SECRET = "fault-tests-secret"
EVENT_TYPE = "deal.updated"
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 0.25
ATTEMPT_TIMEOUT = 10.0  # a sender's wait for an answer (GitHub's), then it retries
RETRYABLE_4XX = frozenset({408, 429})
SHOWN_IDS = 5  # ids named in a summary
EPOCH = datetime(2026, 12, 1, tzinfo=UTC)


def clock() -> float:
    """The one clock of a scenario: deliveries and faults are timed with it."""
    return time.monotonic()


@dataclass(slots=True)
class Delivery:
    event_id: str
    body: bytes
    headers: dict[str, str]
    first_attempt: float | None = None
    accepted_at: float | None = None
    attempts: int = 0
    outcomes: list[str] = field(default_factory=list)  # every answer that was not a 2xx


def make_deliveries(count: int, tag: str) -> list[Delivery]:
    """``count`` unique signed deliveries; the body carries a fixed timestamp so every
    retry (and every re-stored copy) is the same event."""
    deliveries = []
    for index in range(count):
        event_id = f"{tag}-{index:06d}"
        body = orjson.dumps(
            {
                "id": f"deal_{index}",
                "sequence": index,
                "created_at": (EPOCH + timedelta(milliseconds=index)).isoformat(
                    timespec="milliseconds"
                ),
                "amount": index * 7,
            }
        )
        headers = generic_headers(SECRET, body, EVENT_TYPE, event_id)
        headers["Content-Type"] = "application/json"
        deliveries.append(Delivery(event_id, body, headers))
    return deliveries


class Sender:
    """Delivers every ``Delivery`` to ``url``: delivery ``i`` starts no earlier than
    ``rate`` allows (``start + i / rate``) and on one of ``connections`` connections; each
    is retried until a 2xx or until ``deadline_seconds`` after ``run()`` began."""

    def __init__(
        self,
        url: str,
        deliveries: list[Delivery],
        rate: float,
        connections: int,
        deadline_seconds: float,
    ) -> None:
        self.url = url.rstrip("/") + f"/webhooks/{PROVIDER}"
        self.deliveries = deliveries
        self.rate = rate
        self.connections = connections
        self.deadline_seconds = deadline_seconds
        self.accepted = 0
        self.in_flight = 0  # attempts waiting for an answer
        self._posting = asyncio.Event()  # set while in_flight > 0
        self.started = 0.0
        self._next = 0

    async def run(self) -> None:
        self.started = clock()
        limits = httpx.Limits(
            max_connections=self.connections, max_keepalive_connections=self.connections
        )
        async with httpx.AsyncClient(limits=limits) as client:
            await asyncio.gather(*(self._work(client) for _ in range(self.connections)))

    async def wait_accepted(self, count: int, timeout: float = 60) -> None:
        """Return once ``count`` deliveries were accepted (to time a fault mid-load)."""
        await eventually(
            lambda: self.accepted >= count, timeout, interval=0.01, what=f"{count} accepted"
        )

    async def wait_in_flight(self, timeout: float = 10) -> None:
        """Return as soon as a request is in flight (for a kill that cuts requests), or after
        ``timeout`` without one."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._posting.wait(), timeout)

    async def _work(self, client: httpx.AsyncClient) -> None:
        while self._next < len(self.deliveries):
            index, self._next = self._next, self._next + 1
            turn = self.started + index / self.rate
            if (wait := turn - clock()) > 0:
                await asyncio.sleep(wait)
            await self._deliver(client, self.deliveries[index])

    async def _deliver(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        deadline = self.started + self.deadline_seconds
        backoff = BACKOFF_FIRST
        while (now := clock()) < deadline:
            if delivery.first_attempt is None:
                delivery.first_attempt = now
            delivery.attempts += 1
            try:
                response = await self._post(client, delivery, min(ATTEMPT_TIMEOUT, deadline - now))
            except httpx.TransportError as exc:
                delivery.outcomes.append(type(exc).__name__)
            else:
                if response.is_success:
                    delivery.accepted_at = clock()
                    self.accepted += 1
                    return
                delivery.outcomes.append(str(response.status_code))
                if response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
                    return  # refused for good: the provider gives up on it
            await asyncio.sleep(min(backoff, max(deadline - clock(), 0)))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _post(
        self, client: httpx.AsyncClient, delivery: Delivery, timeout: float
    ) -> httpx.Response:
        self.in_flight += 1
        self._posting.set()
        try:
            return await client.post(
                self.url, content=delivery.body, headers=delivery.headers, timeout=timeout
            )
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._posting.clear()


# ---------------------------------------------------------------------------- verification


@dataclass(slots=True, frozen=True)
class Stored:
    """Copies per id in one store; ``unmerged_rows``: ClickHouse copies ``FINAL`` hides."""

    copies: collections.Counter[str]
    unmerged_rows: int = 0


async def jetstream_copies(nats_url: str, stream: str) -> Stored:
    """Messages of ``stream`` per CloudEvent id."""
    messages = await stored_messages(nats_url, stream)
    return Stored(collections.Counter(str(message.json()["id"]) for message in messages))


async def clickhouse_copies(
    query: Callable[[str], Awaitable[list[dict[str, Any]]]], table: str
) -> Stored:
    """Rows of ``table`` per event id with ``FINAL``; ``query`` runs SQL, returns rows."""
    rows = await query(f"SELECT id, count() AS n FROM {table} FINAL GROUP BY id")
    copies = collections.Counter({str(row["id"]): int(row["n"]) for row in rows})
    [raw] = await query(f"SELECT count() AS n FROM {table}")
    return Stored(copies, int(raw["n"]) - sum(copies.values()))


# ---------------------------------------------------------------------------- the report


@dataclass(slots=True, frozen=True)
class FaultReport:
    """The figures of one scenario run. ``recovery_seconds``: from the end of the fault to
    ``recovery_measure`` (None when that never happened); ``affected``: deliveries (or
    stream messages, for sink faults) the fault hit, so 0 would mean it missed the load."""

    scenario: str
    events: int
    accepted: int
    lost: int
    duplicated: int
    recovery_seconds: float | None
    recovery_measure: str
    fault_seconds: float
    affected: int
    retried: int
    outcomes: tuple[tuple[str, int], ...]
    counted_in: str
    unmerged_rows: int | None = None
    lost_ids: tuple[str, ...] = ()
    duplicated_ids: tuple[str, ...] = ()
    notes: str = ""

    def summary(self) -> str:
        recovery = "never" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        answers = ", ".join(f"{name}×{count}" for name, count in self.outcomes) or "none"
        line = (
            f"{self.scenario}: {self.events} events, {self.accepted} accepted, "
            f"lost {self.lost}, duplicated {self.duplicated} ({self.counted_in}); "
            f"recovery {recovery} ({self.recovery_measure}); fault {self.fault_seconds:.2f} s, "
            f"{self.affected} affected, {self.retried} retried (non-2xx: {answers})"
        )
        if self.unmerged_rows is not None:
            line += f"; unmerged rows {self.unmerged_rows}"
        if self.lost_ids:
            line += f"; lost e.g. {', '.join(self.lost_ids)}"
        if self.duplicated_ids:
            line += f"; duplicated e.g. {', '.join(self.duplicated_ids)}"
        return line + (f"; {self.notes}" if self.notes else "")


@dataclass(slots=True, frozen=True)
class Fault:
    """When the fault began and ended, on ``clock()``."""

    started: float
    ended: float


def report(
    scenario: str,
    deliveries: list[Delivery],
    stores: dict[str, Stored],
    fault: Fault,
    recovery_seconds: float | None = None,
    recovery_measure: str = "first 2xx after the fault ended",
    affected: int | None = None,
    notes: str = "",
) -> FaultReport:
    """Compare what the sender saw accepted with every store. Without ``recovery_seconds``
    it is the time from the fault's end to the first delivery accepted after it;
    ``affected`` defaults to the deliveries attempted before the fault ended that were not
    accepted before it began."""
    accepted = {d.event_id for d in deliveries if d.accepted_at is not None}
    lost: set[str] = {d.event_id for d in deliveries} - accepted
    duplicated: set[str] = set()
    for stored in stores.values():
        lost |= accepted - set(stored.copies)
        duplicated |= {event_id for event_id, n in stored.copies.items() if n > 1}
    if recovery_seconds is None:
        after = [
            d.accepted_at for d in deliveries if d.accepted_at and d.accepted_at >= fault.ended
        ]
        recovery_seconds = min(after) - fault.ended if after else None
    if affected is None:
        affected = sum(
            1
            for d in deliveries
            if d.first_attempt is not None
            and d.first_attempt <= fault.ended
            and (d.accepted_at is None or d.accepted_at >= fault.started)
        )
    outcomes = collections.Counter(o for d in deliveries for o in d.outcomes)
    unmerged = [s.unmerged_rows for name, s in stores.items() if name == "clickhouse"]
    return FaultReport(
        scenario=scenario,
        events=len(deliveries),
        accepted=len(accepted),
        lost=len(lost),
        duplicated=len(duplicated),
        recovery_seconds=recovery_seconds,
        recovery_measure=recovery_measure,
        fault_seconds=fault.ended - fault.started,
        affected=affected,
        retried=sum(1 for d in deliveries if d.attempts > 1),
        outcomes=tuple(sorted(outcomes.items(), key=lambda item: (-item[1], item[0]))),
        counted_in=" + ".join(_COUNTED_IN[name] for name in stores),
        unmerged_rows=unmerged[0] if unmerged else None,
        lost_ids=_first(lost),
        duplicated_ids=_first(duplicated),
        notes=notes,
    )


_COUNTED_IN = {"jetstream": "JetStream by CloudEvent id", "clickhouse": "ClickHouse FINAL by id"}


def _first(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(ids)[:SHOWN_IDS])


def check(result: FaultReport) -> None:
    """The assertion of every fault test: the fault hit the load, nothing lost, nothing
    stored twice. Prints the report (``pytest -s`` shows it)."""
    print(result.summary())
    assert result.affected > 0, f"the fault missed the load: {result.summary()}"
    assert (result.lost, result.duplicated) == (0, 0), result.summary()
