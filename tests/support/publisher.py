"""An in-memory ``bus.contract.Publisher`` for the in-process tier: it stores what it is given
(deduplicated by ``msg_id``, as JetStream does), and can be told to fail or to hold publishes
until released. Dead letters arrive here too, as publishes on ``ensemble.dlq.<stage>.<provider>``
(the real ``DeadLetterWriter`` runs on top of it)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from ensemble_tap.bus.contract import Failure, PublishError, PublishResult
from ensemble_tap.bus.dlq import DLQ_SUBJECT_PREFIX


@dataclass(slots=True, frozen=True)
class Published:
    subject: str
    payload: bytes
    msg_id: str
    request_id: str

    def json(self) -> Any:
        return orjson.loads(self.payload)


@dataclass(slots=True)
class _FailureRule:
    failure: Failure
    subjects: str  # a subject prefix ("" for every subject)
    times: int | None  # None: every matching publish


class RecordingPublisher:
    """``stored`` holds what was stored, in order; ``attempts`` every call, failed or not."""

    def __init__(self) -> None:
        self.connected = True
        self.stored: list[Published] = []
        self.attempts: list[Published] = []
        self.held = 0  # publishes waiting for release()
        self._ids: set[str] = set()
        self._rules: list[_FailureRule] = []
        self._gate: asyncio.Event | None = None
        self._arrived = asyncio.Condition()

    def fail(self, failure: Failure, *, subjects: str = "", times: int | None = None) -> None:
        """Make publishes to subjects starting with ``subjects`` fail with ``failure``
        (``times`` of them, or all); the first matching rule decides."""
        self._rules.append(_FailureRule(failure, subjects, times))

    def down(self) -> None:
        """The broker connection is lost: ``connected`` is False and every publish fails
        as unavailable (what the real publisher says once its budget is spent)."""
        self.connected = False
        self.fail(Failure.UNAVAILABLE)

    def restore(self) -> None:
        """Connected again, and no failures from now on."""
        self.connected = True
        self._rules.clear()

    def hold(self) -> None:
        """Keep every publish waiting (a slow broker) until ``release()``."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def wait_held(self, count: int) -> None:
        """Until ``count`` publishes wait at the gate."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.held >= count)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        request_id: str = "",
        timeout: float | None = None,
    ) -> PublishResult:
        call = Published(subject, payload, msg_id, request_id)
        self.attempts.append(call)
        gate = self._gate
        if gate is not None:
            async with self._arrived:
                self.held += 1
                self._arrived.notify_all()
            try:
                await gate.wait()
            finally:
                self.held -= 1
        failure = self._failure_for(subject)
        if failure is not None:
            raise PublishError(f"recorded publisher: {failure.value}", failure)
        duplicate = bool(msg_id) and msg_id in self._ids
        if not duplicate:
            self._ids.add(msg_id)
            self.stored.append(call)
        return PublishResult("RECORDED", len(self.stored), duplicate)

    def _failure_for(self, subject: str) -> Failure | None:
        for rule in self._rules:
            if subject.startswith(rule.subjects) and rule.times != 0:
                if rule.times is not None:
                    rule.times -= 1
                return rule.failure
        return None

    def events(self) -> list[Published]:
        """What was stored outside the dead-letter subjects."""
        return [p for p in self.stored if not p.subject.startswith(DLQ_SUBJECT_PREFIX + ".")]

    def dead_letters(self) -> list[dict[str, Any]]:
        """The dead-letter records stored, decoded."""
        return [p.json() for p in self.stored if p.subject.startswith(DLQ_SUBJECT_PREFIX + ".")]
