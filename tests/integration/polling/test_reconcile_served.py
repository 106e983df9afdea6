"""webhook+poll through the served service (#16): the composition root wires the webhook
route's version recorder to the poller's state store (``state.backend: sqlite``), so a
change delivered over HTTP is not announced again by the poller, and a change whose webhook
never came is published once with ``data.source`` poll and counted."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from ensemble_tap.send.signing import hubspot_headers
from tests.integration.conftest import StartApp
from tests.integration.polling.test_reconcile import SECRET, T1, deal_event
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually


def reconciled(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "tap_reconciled_events_total":
                return sample.value
    return 0.0


async def test_the_served_service_reconciles_webhook_and_poll(
    start_app: StartApp, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with FakeHubSpot() as fake:
        app = start_app(
            providers={
                "hubspot": {
                    "mode": "webhook+poll",
                    "client_secret": SECRET,
                    "access_token": "hubspot-token",
                    "base_url": fake.url,
                    "objects": ["deals"],
                    "poll_interval": "500ms",
                }
            },
            state={"backend": "sqlite", "sqlite_path": str(tmp_path / "state.db")},
        )
        url = f"{app.url}/webhooks/hubspot"
        signed_url = url.replace("http://", "https://")  # HubSpot calls https (TLS ends before)
        body = orjson.dumps([deal_event("1001", T1, dealstage="won")])
        headers = hubspot_headers(SECRET, "POST", signed_url, body, time.time_ns() // 1_000_000)
        async with httpx.AsyncClient() as client:
            reply = await client.post(url, content=body, headers=headers)
            assert reply.status_code == 202, reply.text
            # The API then shows that change, and one more whose webhook never came.
            fake.put("deals", "1001", T1, dealstage="won")
            fake.put("deals", "1002", T1, dealstage="open")

            async def filled() -> list[tuple[str, str | None]] | None:
                stored = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
                found = [
                    (m.json()["data"]["entity_id"], m.json()["data"].get("source")) for m in stored
                ]
                return found if ("1002", "poll") in found else None

            events = await eventually(filled, 20, what="the missed change published by poll")
            # Two more cycles: the change the webhook brought stays unannounced by the poller.
            seen = len(fake.data_requests())

            async def two_more_cycles() -> bool:
                return len(fake.data_requests()) >= seen + 2

            await eventually(two_more_cycles, 20, what="two more poll cycles")
            metrics = (await client.get(f"{app.url}/metrics")).text
    stored = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    final = sorted(
        ((m.json()["data"]["entity_id"], m.json()["data"].get("source")) for m in stored), key=str
    )
    assert final == [("1001", None), ("1002", "poll")], events
    assert reconciled(metrics) == 1
