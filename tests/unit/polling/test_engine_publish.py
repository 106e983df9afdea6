"""What the poll engine does with each kind of publish failure, in process: the real poller
service against a fake HubSpot API, publishing to a ``RecordingPublisher``. Refused for good:
dead-lettered and the cycle goes on; anything that may clear: the cycle stops and the record
is published next time (tests/integration/polling/test_engine.py covers a real broker)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from ensemble_tap.bus.contract import Failure
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.observability import Metrics
from ensemble_tap.poller.service import PollerService
from ensemble_tap.state import MemoryStateStore
from tests.support.configs import make_config
from tests.support.fakes import at
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.polling import FakeClock
from tests.support.publisher import RecordingPublisher

T0 = at("2026-03-03T14:00:00Z")
CONTACTS = "poll.test.hubspot.contact."


@dataclass
class Rig:
    service: PollerService
    publisher: RecordingPublisher

    async def cycle(self) -> dict[str, Any]:
        """One attempt; the poller's status entry after it."""
        await self.service.schedulers[0].run_once()
        status: dict[str, Any] = self.service.status()[0]
        return status

    def entity_ids(self) -> list[str]:
        return sorted(p.json()["data"]["entity_id"] for p in self.publisher.events())


@contextlib.asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with FakeHubSpot() as fake:
        fake.put("deals", "d1", T0, dealname="fine")
        fake.put("contacts", "c1", T0, email="a@example.com")
        providers = {
            "hubspot": {
                "mode": "poll",
                "access_token": "hubspot-token",
                "base_url": fake.url,
                "objects": ["deals", "contacts"],
            }
        }
        config = make_config(
            None, str(tmp_path), providers=providers, nats={"subject_prefix": "poll.test"}
        )
        metrics = Metrics()
        publisher = RecordingPublisher()
        service = PollerService(
            config,
            publisher=publisher,
            dlq=DeadLetterWriter(publisher, metrics),
            metrics=metrics,
            clock=FakeClock(),
            store=MemoryStateStore(),
        )
        await service.start(run=False)
        try:
            yield Rig(service, publisher)
        finally:
            await service.stop()


@pytest.mark.parametrize("failure", [Failure.PERMANENT, Failure.TOO_LARGE])
async def test_an_event_refused_for_good_is_dead_lettered_and_the_cycle_goes_on(
    tmp_path: Path, failure: Failure
) -> None:
    async with rig(tmp_path) as poll:
        poll.publisher.fail(failure, subjects=CONTACTS)
        status = await poll.cycle()
        again = await poll.cycle()  # not retried every cycle

    assert "last_error" not in status and "last_error" not in again
    assert poll.entity_ids() == ["d1"]
    [record] = poll.publisher.dead_letters()
    assert (record["stage"], record["provider"]) == ("poll_publish", "hubspot")
    assert record["original_subject"] == CONTACTS + "created"
    assert record["original_dedup_id"].startswith("poll_")
    [attempt] = [p for p in poll.publisher.attempts if p.subject.startswith(CONTACTS)]
    if failure is Failure.TOO_LARGE:  # the dead letter could not hold it either
        assert "original_payload" not in record
        assert record["payload_sha256"] == hashlib.sha256(attempt.payload).hexdigest()
    else:
        payload = orjson.loads(base64.b64decode(record["original_payload"]))
        assert payload["data"]["entity_id"] == "c1"


@pytest.mark.parametrize("failure", [Failure.UNAVAILABLE, Failure.REFUSED])
async def test_an_event_that_may_be_stored_later_stops_the_cycle_without_a_dead_letter(
    tmp_path: Path, failure: Failure
) -> None:
    async with rig(tmp_path) as poll:
        poll.publisher.fail(failure, subjects=CONTACTS)
        failed = await poll.cycle()
        poll.publisher.restore()
        healed = await poll.cycle()

    assert failed["last_error"].startswith("publish poll event: recorded publisher")
    assert poll.publisher.dead_letters() == []
    assert "last_error" not in healed
    assert poll.entity_ids() == ["c1", "d1"]  # the contact was published the next time
