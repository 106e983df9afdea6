"""Per provider: a realistic delivery (payload and headers as the provider documents them),
sent over HTTP to the running service and read back from JetStream."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from tests.integration.conftest import StartApp
from tests.support.cloudevent import parse_cloudevent
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import b64_hmac, hex_hmac, hubspot_v3, stripe_header

PROVIDERS: dict[str, Any] = {
    "stripe": {"secret": "whsec_test"},
    "github": {"secret": "github-secret"},
    "hubspot": {"client_secret": "hubspot-secret"},
    "linear": {"secret": "linear-secret"},
    "shopify": {"secret": "shopify-secret"},
}


async def _events(url: str) -> list[tuple[str, dict[str, str], Any]]:
    return [
        (m.subject, m.headers, parse_cloudevent(m.data))
        for m in await stored_messages(url, "ENSEMBLE_TAP")
    ]


async def test_stripe_event(start_app: StartApp, private_nats: NatsServer) -> None:
    app = start_app(providers=PROVIDERS)
    body = orjson.dumps(
        {
            "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
            "object": "event",
            "api_version": "2024-12-18.acacia",
            "created": 1686089970,
            "type": "customer.subscription.updated",
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {
                "object": {
                    "id": "sub_1NG8Du2eZvKYlo2C",
                    "object": "subscription",
                    "status": "active",
                },
                "previous_attributes": {"status": "trialing"},
            },
        }
    )
    async with httpx.AsyncClient(base_url=app.url) as client:
        for timestamp in (int(time.time()), int(time.time()) + 1):  # a retry is re-signed
            response = await client.post(
                "/webhooks/stripe",
                content=body,
                headers={
                    "Stripe-Signature": stripe_header("whsec_test", body, timestamp),
                    "Content-Type": "application/json; charset=utf-8",
                },
            )
            assert response.status_code == 202, response.text

    [(subject, headers, event)] = await _events(private_nats.url)
    assert subject == "ensemble.tap.stripe.customer_subscription.updated"
    assert event.get_type() == "ensemble.tap.stripe.customer_subscription.updated"
    assert event.get_id() == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert event.get_subject() == "customer.subscription/sub_1NG8Du2eZvKYlo2C"
    assert event.get_time().isoformat() == "2023-06-06T22:19:30+00:00"
    assert headers["Nats-Msg-Id"] == "stripe::evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert event.get_data()["snapshot"]["status"] == "active"


async def test_github_push_and_form_encoded_issue(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS)
    push = orjson.dumps(
        {
            "ref": "refs/heads/main",
            "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
            "repository": {"id": 35129377, "full_name": "octocat/Hello-World"},
            "pusher": {"name": "octocat"},
        }
    )
    issue = orjson.dumps({"action": "opened", "issue": {"id": 1347, "number": 1}})
    form = urlencode({"payload": issue.decode()}).encode()
    async with httpx.AsyncClient(base_url=app.url) as client:
        first = await client.post(
            "/webhooks/github",
            content=push,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                "X-Hub-Signature-256": "sha256=" + hex_hmac("github-secret", push),
                "X-Hub-Signature": "sha1=" + hex_hmac("github-secret", push, "sha1"),
                "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/044aadd",
            },
        )
        second = await client.post(
            "/webhooks/github",
            content=form,
            headers={
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": "d2a5e8f0-0000-11ee-8000-000000000001",
                "X-Hub-Signature-256": "sha256=" + hex_hmac("github-secret", form),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        sha1_only = await client.post(
            "/webhooks/github",
            content=push,
            headers={
                "X-GitHub-Event": "push",
                "X-Hub-Signature": "sha1=" + hex_hmac("github-secret", push, "sha1"),
                "Content-Type": "application/json",
            },
        )

    assert (first.status_code, second.status_code) == (202, 202), second.text
    assert sha1_only.status_code == 401
    events = await _events(private_nats.url)
    assert [s for s, _, _ in events] == [
        "ensemble.tap.github.push.updated",  # new commits on an existing branch
        "ensemble.tap.github.issues.opened",
    ]
    assert events[0][2].get_subject() == "push/octocat/Hello-World/refs/heads/main"
    assert events[1][2].get_subject() == "issues/1347"
    assert events[0][1]["Nats-Msg-Id"] == "github::72d3162e-cc78-11e3-81ab-4c9367dc0958"


GITHUB_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"


async def test_github_one_delivery_through_two_hooks_is_two_events(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    """GitHub sends one event with one GUID to each subscribed hook (a repository hook and an
    app: payloads differ in ``installation``); a redelivery through a hook keeps GUID and hook."""
    app = start_app(providers=PROVIDERS)
    guid = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    issue = orjson.loads((GITHUB_FIXTURES / "issues.json").read_bytes())
    deliveries = [
        ("111", issue),
        ("222", issue | {"installation": {"id": 957387}}),
        ("111", issue),  # GitHub's "Redeliver" of the first
    ]
    async with httpx.AsyncClient(base_url=app.url) as client:
        for hook, payload in deliveries:
            body = orjson.dumps(payload)
            response = await client.post(
                "/webhooks/github",
                content=body,
                headers={
                    "X-GitHub-Event": "issues",
                    "X-GitHub-Delivery": guid,
                    "X-GitHub-Hook-ID": hook,
                    "X-Hub-Signature-256": "sha256=" + hex_hmac("github-secret", body),
                    "Content-Type": "application/json",
                },
            )
            assert response.status_code == 202, response.text

    events = await _events(private_nats.url)
    assert [headers["Nats-Msg-Id"] for _, headers, _ in events] == [
        f"github::{guid}:111",
        f"github::{guid}:222",
    ]
    assert len({event.get_id() for _, _, event in events}) == 2
    assert {event.get_data()["provider_event_id"] for _, _, event in events} == {guid}
    assert [event.get_subject() for _, _, event in events] == ["issues/444500041"] * 2


async def test_hubspot_batch_becomes_one_event_per_element(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS)
    now_ms = int(time.time() * 1000)
    batch = [
        {
            "eventId": 100 + i,
            "subscriptionId": 2001,
            "portalId": 62515,
            "appId": 54321,
            "occurredAt": 1709562120000 + i,
            "subscriptionType": kind,
            "attemptNumber": 0,
            "objectId": 820982911946154508 + i,
            "changeSource": "CRM",
            **extra,
        }
        for i, (kind, extra) in enumerate(
            [
                ("contact.creation", {}),
                ("deal.propertyChange", {"propertyName": "dealstage", "propertyValue": "won"}),
                ("company.deletion", {}),
            ]
        )
    ]
    body = orjson.dumps(batch)
    url = "https://tap.example.com/webhooks/hubspot?portal=62515"
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post(
            "/webhooks/hubspot?portal=62515",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Host": "tap.example.com",
                "X-HubSpot-Request-Timestamp": str(now_ms),
                "X-HubSpot-Signature-v3": hubspot_v3("hubspot-secret", "POST", url, body, now_ms),
            },
        )

    assert response.status_code == 202, response.text
    assert len(response.json()["events"]) == 3
    events = await _events(private_nats.url)
    assert [s for s, _, _ in events] == [
        "ensemble.tap.hubspot.contact.created",
        "ensemble.tap.hubspot.deal.updated",
        "ensemble.tap.hubspot.company.deleted",
    ]
    subjects = [e.get_subject() for _, _, e in events]
    assert subjects[0] == "contact/820982911946154508"  # never rounded through a float
    assert events[1][2].get_data()["changes"] == {"dealstage": {"from": None, "to": "won"}}
    assert events[0][2].get_time().isoformat() == "2024-03-04T14:22:00+00:00"
    assert events[0][1]["Nats-Msg-Id"] == "hubspot::100:62515:2001:1709562120000"


async def test_linear_issue_update(start_app: StartApp, private_nats: NatsServer) -> None:
    app = start_app(providers=PROVIDERS)
    now_ms = int(time.time() * 1000)
    body = orjson.dumps(
        {
            "action": "update",
            "type": "Issue",
            "createdAt": "2026-11-28T10:00:00.000Z",
            "organizationId": "org-1",
            "url": "https://linear.app/acme/issue/ENG-1",
            "data": {"id": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9", "title": "Fix it"},
            "updatedFrom": {"title": "Fix"},
            "webhookTimestamp": now_ms,
            "webhookId": "000042e3-d123-4980-b49f-8e140eef9329",
        }
    )
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post(
            "/webhooks/linear",
            content=body,
            headers={
                "Linear-Signature": hex_hmac("linear-secret", body),
                "Linear-Delivery": "234d1a4e-b617-4388-90fe-adc3633d6b72",
                "Linear-Event": "Issue",
                "Content-Type": "application/json; charset=utf-8",
            },
        )

    assert response.status_code == 202, response.text
    [(subject, headers, event)] = await _events(private_nats.url)
    assert subject == "ensemble.tap.linear.issue.updated"
    assert event.get_subject() == "issue/2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9"
    assert headers["Nats-Msg-Id"] == "linear::234d1a4e-b617-4388-90fe-adc3633d6b72"


async def test_shopify_order_paid(start_app: StartApp, private_nats: NatsServer) -> None:
    app = start_app(providers=PROVIDERS)
    body = orjson.dumps(
        {
            "id": 820982911946154508,
            "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
            "email": "jon@example.com",
            "financial_status": "paid",
            "total_price": "403.00",
        }
    )
    webhook_id = str(uuid.uuid4())
    headers = {
        "X-Shopify-Topic": "orders/paid",
        "X-Shopify-Hmac-Sha256": b64_hmac("shopify-secret", body),
        "X-Shopify-Shop-Domain": "example.myshopify.com",
        "X-Shopify-API-Version": "2025-10",
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        "X-Shopify-Triggered-At": "2026-11-28T10:00:00.123456789Z",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(base_url=app.url) as client:
        for _ in range(2):  # Shopify retries keep the webhook id
            response = await client.post("/webhooks/shopify", content=body, headers=headers)
            assert response.status_code == 202, response.text

    [(subject, stored_headers, event)] = await _events(private_nats.url)
    assert subject == "ensemble.tap.shopify.orders.paid"
    assert event.get_subject() == "orders/820982911946154508"
    assert stored_headers["Nats-Msg-Id"] == f"shopify::{webhook_id}"
    assert event.get_data()["provider_timestamp"] == "2026-11-28T10:00:00.123456789Z"
