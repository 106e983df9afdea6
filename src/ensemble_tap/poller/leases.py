"""Which poll targets this replica polls, with ``state.backend: nats`` (several replicas).

Every ``lease_ttl / 3`` the keeper writes this replica's heartbeat, renews its leases
(compare-and-set: a lease that expired or was taken meanwhile is lost and its poller
stopped), reads every lease and heartbeat, and evens the load out: a replica holds at most
its fair share, ceil(targets / live replicas), and takes free targets up to it. When some
live replica holds fewer than floor(targets / live replicas), the replica holding most gives
one back each round and replicas at or above that floor take none, so an idle replica gets
targets even when no one is above the ceiling. A lease not renewed for ``lease_ttl`` (NATS
unreachable) is dropped here too: the server has expired it, another replica may hold it.

Before a poller commits a page it confirms its lease (``confirm``: a renewal, so a
compare-and-set on the revision); a lost lease raises ``LeaseLost`` and nothing is committed.
With the checkpoint's own compare-and-set (``state/jetstream.py``) two holders can never both
commit. And a holder stops calling the target's API before the server could expire its lease:
a watchdog halts the poller of a lease whose last successful renewal was *sent* more than
``lease_ttl - renew_every / 2`` ago (the server expires it ``lease_ttl`` after storing it,
which is later still), so a slow round or an unreachable NATS never leaves two replicas polling.

Rounds touch thousands of leases at scale: renewals, takes and give-backs each run
concurrently (at most ``LEASE_CONCURRENCY`` in flight), so a round lasts a few round trips,
not one per target, and the heartbeat written at its start never lapses while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

from ensemble_tap.events import now_ns
from ensemble_tap.observability import get_logger
from ensemble_tap.state.base import StateError
from ensemble_tap.state.leases import LeaseTable, LeaseView

RENEWS_PER_TTL = 3
# Lease writes in flight at once in a round: enough to overlap round trips, few enough that
# a round of thousands does not flood the connection ahead of the pollers' own requests.
LEASE_CONCURRENCY = 64
log = get_logger("ensemble_tap.poller")


class LeaseLost(StateError):
    """This replica no longer holds the target's lease: the page is not committed."""


def replica_id() -> str:
    """``<hostname>-<pid>-<4 hex>``: the pod name in Kubernetes; the random part tells a
    restarted process (pid 1 again in a container) from the one whose leases still live."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(slots=True, frozen=True)
class Plan:
    take: tuple[str, ...] = ()
    give_back: tuple[str, ...] = ()


def plan(*, targets: Sequence[str], view: LeaseView, me: str, mine: Collection[str]) -> Plan:
    """What this replica does this round (see the module docstring)."""
    known = set(targets)
    live = set(view.replicas) | {me}
    share = -(-len(targets) // len(live))
    floor = len(targets) // len(live)
    counts = Counter(
        lease.holder
        for target, lease in view.leases.items()
        if target in known and target not in mine and lease.holder != me
    )
    held = sorted(target for target in mine if target in known)
    counts[me] = len(held)
    if len(held) > share:
        return Plan(give_back=tuple(held[share:]))
    others_starving = any(counts[replica] < floor for replica in live - {me})
    if others_starving and len(held) > floor:
        # Only the replica holding most (ties: the greatest id), so two never both give.
        top = max(live, key=lambda replica: (counts[replica], replica))
        return Plan(give_back=(held[-1],)) if top == me else Plan()
    if others_starving and len(held) >= floor:
        return Plan()
    free = [t for t in targets if t not in view.leases and t not in mine]
    # Each replica tries the free targets in an order of its own: fewer collisions.
    free.sort(key=lambda target: hashlib.sha256(f"{me}\n{target}".encode()).digest())
    return Plan(take=tuple(free[: share - len(held)]))


@dataclass(slots=True)
class _Held:
    revision: int
    since_ns: int
    renewed_at: float  # time.monotonic() when the last successful write was sent
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LeaseKeeper:
    def __init__(
        self,
        table: LeaseTable,
        *,
        targets: Sequence[str],
        ttl: float,
        start: Callable[[str], Awaitable[None]],
        stop: Callable[[str], Awaitable[None]],
    ) -> None:
        """``start``/``stop``: begin polling a target (reading its state anew) / cancel
        its poller and wait for it."""
        self.table = table
        self.replica = table.replica
        self.targets = list(targets)
        self.ttl = ttl
        self.renew_every = ttl / RENEWS_PER_TTL
        # A lease unrenewed this long is halted here, before the server may expire it.
        self.hold_for = ttl - self.renew_every / 2
        self._start = start
        self._stop = stop
        self._held: dict[str, _Held] = {}
        self._running: set[str] = set()
        self._writes = asyncio.Semaphore(LEASE_CONCURRENCY)
        self.view: LeaseView | None = None

    def held(self) -> list[str]:
        return sorted(self._held)

    def holder_of(self, target: str) -> tuple[str, int | None] | None:
        """(replica, since) of the target's lease as last seen; None when free."""
        held = self._held.get(target)
        if held is not None:
            return self.replica, held.since_ns
        lease = self.view.leases.get(target) if self.view is not None else None
        if lease is None or lease.holder == self.replica:
            return None
        return lease.holder, lease.since_ns

    async def run(self) -> None:
        """Keep the leases until cancelled (then ``stop``)."""
        watchdog = asyncio.create_task(self._watch(), name="poll lease watchdog")
        try:
            while True:
                try:
                    await self.tick()
                except StateError as exc:
                    log.warning("poll leases: round failed", error=str(exc))
                except Exception as exc:  # never end the rounds: held leases would go unrenewed
                    log.error("poll leases: round failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.renew_every)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watch(self) -> None:
        """Halt the pollers of leases left unrenewed too long, whatever the rounds are doing."""
        while True:
            await self._drop_unrenewed()
            await asyncio.sleep(min(1.0, self.renew_every / 4))

    async def tick(self) -> None:
        """One round: heartbeat, renew, read, give back or take."""
        await self.table.heartbeat()
        await self._each(list(self._held), self._renew)
        await self._each(sorted(self._running - set(self._held)), self._halt)  # lost meanwhile
        self.view = await self.table.view()
        step = plan(targets=self.targets, view=self.view, me=self.replica, mine=self._held)
        await self._each(step.give_back, self._give_back)
        await self._each(step.take, self._take)

    async def _each(self, targets: Sequence[str], action: Callable[[str], Awaitable[None]]) -> None:
        """``action`` on every target, at most ``LEASE_CONCURRENCY`` at once; the first error
        propagates once all have ended (none is left running unseen)."""

        async def bounded(target: str) -> None:
            async with self._writes:
                await action(target)

        results = await asyncio.gather(*(bounded(t) for t in targets), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def confirm(self, target: str) -> None:
        """Renew the lease now; LeaseLost when it is not ours any more (the fence before a
        commit). Called from the target's own poller, so it never stops that poller."""
        held = self._held.get(target)
        if held is None:
            raise LeaseLost(f"lease of {target} is not held by this replica")
        async with held.lock:
            if self._held.get(target) is not held:
                raise LeaseLost(f"lease of {target} was given back")
            sent_at = time.monotonic()
            revision = await self.table.renew(target, held.revision, held.since_ns)
            if revision is None:
                self._held.pop(target, None)
                raise LeaseLost(f"lease of {target} expired or was taken by another replica")
            held.revision, held.renewed_at = revision, sent_at

    async def _renew(self, target: str) -> None:
        held = self._held.get(target)
        if held is None:
            return
        async with held.lock:
            sent_at = time.monotonic()
            try:
                revision = await self.table.renew(target, held.revision, held.since_ns)
            except StateError as exc:  # unknown: kept until the watchdog gives up on it
                log.warning("poll lease not renewed", target=target, error=str(exc))
                return
            if revision is not None:
                held.revision, held.renewed_at = revision, sent_at
                return
            self._held.pop(target, None)
        log.warning("poll lease lost: another replica polls the target now", target=target)
        await self._halt(target)

    async def _drop_unrenewed(self) -> None:
        now = time.monotonic()
        for target, held in list(self._held.items()):
            if now - held.renewed_at > self.hold_for and self._held.get(target) is held:
                self._held.pop(target, None)
                log.warning("poll lease unrenewed: poller halted before it expires "
                            "(nats unreachable or slow?)", target=target)  # fmt: skip
                await self._halt(target)

    async def _take(self, target: str) -> None:
        since, sent_at = now_ns(), time.monotonic()
        revision = await self.table.take(target, since)
        if revision is None:
            return  # another replica was faster
        self._held[target] = _Held(revision, since, sent_at)
        log.info("poll lease taken", target=target, replica=self.replica)
        self._running.add(target)
        await self._start(target)

    async def _give_back(self, target: str) -> None:
        held = self._held.pop(target, None)
        await self._halt(target)
        if held is not None:
            async with held.lock:  # a confirm in flight may still move the revision
                await self.table.release(target, held.revision)
            log.info("poll lease given back", target=target, replica=self.replica)

    async def _halt(self, target: str) -> None:
        if target in self._running:
            self._running.discard(target)
            await self._stop(target)

    async def stop(self) -> None:
        """Stop every poller, give every lease back and leave (SIGTERM): the other replicas
        take the targets at their next round instead of after ``lease_ttl``."""
        await self._each(sorted(self._held), self._give_back_or_let_expire)
        await self._each(sorted(self._running), self._halt)
        with contextlib.suppress(StateError):
            await self.table.leave()

    async def _give_back_or_let_expire(self, target: str) -> None:
        try:
            await self._give_back(target)
        except StateError as exc:  # it expires after lease_ttl instead
            log.warning("poll lease not given back", target=target, error=str(exc))
