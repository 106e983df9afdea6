"""HubSpot events that share an ``eventId`` (HubSpot: "not guaranteed to be unique") stay two
events end to end: two stream messages, two CloudEvent ids, two ClickHouse rows under FINAL."""

from __future__ import annotations

import time

import httpx
import orjson

from ensemble_tap.sink import EventFilters
from tests.integration.conftest import StartApp
from tests.support.cloudevent import data_of, parse_cloudevent
from tests.support.hubspot import contact_creation
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import hubspot_v3
from tests.support.sink import FAST
from tests.support.waiting import eventually

SECRET = "hubspot-secret"


async def post(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    now_ms = int(time.time() * 1000)
    url = "https://tap.example.com/webhooks/hubspot"
    return await client.post(
        "/webhooks/hubspot",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Host": "tap.example.com",
            "X-HubSpot-Request-Timestamp": str(now_ms),
            "X-HubSpot-Signature-v3": hubspot_v3(SECRET, "POST", url, body, now_ms),
        },
    )


async def test_events_sharing_an_event_id_are_two_rows(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(
        providers={"hubspot": {"client_secret": SECRET}},
        clickhouse={"backend": "embedded", **FAST},
    )
    sink = app.app.sink
    assert sink is not None
    first = orjson.dumps([contact_creation(1001, 501), contact_creation(2002, 902)])
    retry = orjson.dumps([contact_creation(1001, 501, attempt=1)])  # HubSpot's redelivery
    async with httpx.AsyncClient(base_url=app.url) as client:
        assert (await post(client, first)).status_code == 202
        assert (await post(client, retry)).status_code == 202

    await eventually(lambda: sink.status_info.rows_inserted >= 2)
    rows, _ = await sink.search(EventFilters(provider="hubspot"))  # read under FINAL
    assert sorted((r["id"], r["provider_event_id"], r["entity_id"]) for r in rows) == [
        ("777001:1001:4001:1709562120000", "777001", "501"),
        ("777001:2002:4001:1709562120000", "777001", "902"),
    ]
    # The two events of one delivery are published concurrently: compare without order.
    messages = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    events = [parse_cloudevent(m.data) for m in messages]
    assert sorted(e.get_id() for e in events) == sorted(r["id"] for r in rows)  # retry deduplicated
    assert [data_of(e)["provider_event_id"] for e in events] == ["777001", "777001"]
    assert sorted(m.headers["Nats-Msg-Id"] for m in messages) == [
        "hubspot::777001:1001:4001:1709562120000",
        "hubspot::777001:2002:4001:1709562120000",
    ]
