"""webhook+poll as one stream (#16): the webhook path records the version of each change it
published, and the poller announces only what no webhook brought, with ``data.source`` poll,
counted in ``tap_reconciled_events_total``. The real webhook route (``WebhookIngress``, called
as ASGI) and a poller against the fake HubSpot API share one SQLite state store."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.ingress import WebhookIngress
from ensemble_tap.send.signing import hubspot_headers
from ensemble_tap.state import SqliteStateStore, StateStore
from ensemble_tap.state.versions import VersionRecorder
from tests.support.fakes import at
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.polling import PollRig, poll_rig, unique_name
from tests.support.waiting import eventually

SECRET = "hubspot-client-secret"
URL = "https://tap.example.com/webhooks/hubspot"
T1 = at("2026-03-03T14:00:00.250Z")
T2 = at("2026-03-03T14:07:00.500Z")
_EVENT_IDS = itertools.count(1)


def settings(fake: FakeHubSpot) -> dict[str, Any]:
    return {
        "hubspot": {
            "mode": "webhook+poll",
            "client_secret": SECRET,
            "access_token": "hubspot-token",
            "base_url": fake.url,
            "objects": ["deals"],
        }
    }


def deal_event(
    deal: str, when_ns: int, kind: str = "propertyChange", **change: str
) -> dict[str, Any]:
    """A ``deal.*`` event as HubSpot's webhooks guide documents its fields."""
    event: dict[str, Any] = {
        "eventId": next(_EVENT_IDS),
        "subscriptionId": 4002,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": when_ns // 1_000_000,
        "subscriptionType": f"deal.{kind}",
        "attemptNumber": 0,
        "objectId": int(deal),
        "changeSource": "CRM",
    }
    for name, value in change.items():
        event.update(propertyName=name, propertyValue=value)
    return event


@dataclass
class Webhooks:
    client: httpx.AsyncClient
    store: StateStore

    async def deliver(self, *events: dict[str, Any]) -> None:
        body = orjson.dumps(list(events))
        headers = hubspot_headers(SECRET, "POST", URL, body, time.time_ns() // 1_000_000)
        reply = await self.client.post(URL, content=body, headers=headers)
        assert reply.status_code == 202, reply.text

    async def recorded(self, deal: str) -> None:
        """Wait until the background writer stored the delivery's version."""

        async def found() -> bool:
            return bool(await self.store.get_versions("hubspot", [("deal", deal)]))

        await eventually(found, timeout=10, what=f"version of deal {deal} recorded")


@contextlib.asynccontextmanager
async def webhook_route(rig: PollRig, store: StateStore) -> AsyncIterator[Webhooks]:
    """The service's webhook route on the rig's stream, recording versions into ``store``."""
    recorder = VersionRecorder()
    recorder.attach(store)
    publisher = JetStreamPublisher(rig.broker, rig.config.nats, rig.metrics)
    ingress = WebhookIngress(
        rig.config, publisher, DeadLetterWriter(publisher, rig.metrics), rig.metrics,
        versions=recorder,
    )  # fmt: skip
    transport = httpx.ASGITransport(app=ingress)
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            yield Webhooks(client, store)
    finally:
        ingress.close()
        await recorder.close()


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(e["data"]["entity_id"], e["data"]["action"], e["data"].get("source")) for e in events]


async def test_a_change_a_webhook_brought_is_not_announced_again_and_a_dropped_one_is_filled_once(
    nats_url: str, data_dir: str, tmp_path: Path
) -> None:
    store = SqliteStateStore(str(tmp_path / "state.db"))
    try:
        async with (
            FakeHubSpot() as fake,
            poll_rig(nats_url, data_dir, settings(fake), store=store) as rig,
            webhook_route(rig, store) as webhooks,
        ):
            assert (await rig.cycle()).fetched == 0
            fake.put("deals", "1001", T1, dealstage="won")
            await webhooks.deliver(deal_event("1001", T1, dealstage="won"))
            await webhooks.recorded("1001")
            silent = await rig.cycle()
            delivered = await rig.events()

            fake.put("deals", "1001", T2, dealstage="lost")  # its webhook is dropped
            filled = await rig.cycle()
            hole = await rig.events()
            again = await rig.cycle()
            assert await rig.events() == []
            status = rig.service.status()[0]
    finally:
        await store.close()

    assert (silent.fetched, silent.known, silent.published) == (1, 1, 0)
    assert summary(delivered) == [("1001", "updated", None)]  # the webhook's event only
    assert (filled.known, filled.updated, again.published) == (0, 1, 0)
    assert summary(hole) == [("1001", "updated", "poll")]
    # The poller's diff starts from the state the webhook brought (the silent snapshot).
    assert hole[0]["data"]["changes"]["dealstage"] == {"from": "won", "to": "lost"}
    assert rig.metric("tap_reconciled_events_total", provider="hubspot") == 1
    assert rig.metric("tap_poller_records_total", provider="hubspot", result="known") == 1
    assert status["last_cycle"]["known"] == 0


async def test_versions_recorded_before_a_restart_keep_the_poller_silent_after_it(
    nats_url: str, data_dir: str, tmp_path: Path
) -> None:
    """state.backend sqlite: a webhook's version outlives the process; the first cycle
    after the restart announces only the record no webhook brought."""
    path, stream = str(tmp_path / "state.db"), unique_name()
    async with FakeHubSpot() as fake:
        first = SqliteStateStore(path)
        try:
            async with (
                poll_rig(nats_url, data_dir, settings(fake), store=first, stream=stream) as rig,
                webhook_route(rig, first) as webhooks,
            ):
                await webhooks.deliver(deal_event("7", T1, "creation"))
                await webhooks.recorded("7")
        finally:
            await first.close()
        fake.put("deals", "7", T1, dealname="Seven")
        fake.put("deals", "8", T1, dealname="Eight")  # created while its webhook was lost
        second = SqliteStateStore(path)
        try:
            async with poll_rig(
                nats_url, data_dir, settings(fake), store=second, stream=stream
            ) as rig:
                stats = await rig.cycle()
                events = await rig.events()
        finally:
            await second.close()

    assert (stats.known, stats.created) == (1, 1)
    assert summary(events) == [("7", "created", None), ("8", "created", "poll")]
    assert rig.metric("tap_reconciled_events_total", provider="hubspot") == 1
