"""A redelivery is one event for as long as providers retry (issue #18, defect 3): the event
stream's duplicate window defaults to 72 hours, and a stream made with the old 2-minute window
is widened at start."""

from __future__ import annotations

import asyncio
import time

import httpx
import nats
import orjson
import pytest

from ensemble_tap.bus.streams import main_stream_config
from ensemble_tap.config.models import DEFAULT_DEDUP_WINDOW, NatsConfig
from tests.integration.conftest import StartApp
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import stripe_header

SECRET = "whsec_test"
# Stripe's documented event shape; a redelivery carries the same id and ``created``.
EVENT = orjson.dumps(
    {
        "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "object": "event",
        "type": "invoice.paid",
        "created": 1686089970,
        "data": {"object": {"id": "in_1NG8Du2eZvKYlo2C", "object": "invoice"}},
    }
)


async def deliver(client: httpx.AsyncClient) -> int:
    now = int(time.time())
    response = await client.post(
        "/webhooks/stripe",
        content=EVENT,
        headers={"Stripe-Signature": stripe_header(SECRET, EVENT, now)},
    )
    return response.status_code


@pytest.mark.parametrize(("window", "stored"), [(None, 1), ("1s", 2)])
async def test_a_redelivery_after_the_window_is_published_again_only_if_the_window_is_short(
    start_app: StartApp, private_nats: NatsServer, window: str | None, stored: int
) -> None:
    """The 1 s window stands in for the old 2-minute default: past it the redelivery was a
    second event; the default window still recognises it."""
    nats_section = {"dedup_window": window} if window else {}
    app = start_app(providers={"stripe": {"secret": SECRET}}, nats=nats_section)
    async with httpx.AsyncClient(base_url=app.url) as client:
        assert await deliver(client) == 202
        await asyncio.sleep(1.5)
        assert await deliver(client) == 202
    messages = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert len(messages) == stored
    assert {orjson.loads(m.data)["time"] for m in messages} == {"2023-06-06T22:19:30Z"}


async def test_a_stream_with_the_old_window_is_widened_at_start(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    old = main_stream_config(NatsConfig(dedup_window="2m"))
    nc = await nats.connect(private_nats.url)
    try:
        await nc.jetstream().add_stream(old)
        start_app(providers={"stripe": {"secret": SECRET}})
        info = await nc.jetstream().stream_info(old.name or "")
    finally:
        await nc.close()
    assert info.config.duplicate_window == DEFAULT_DEDUP_WINDOW == 72 * 3600
