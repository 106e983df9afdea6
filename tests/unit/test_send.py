"""``ensemble-tap send`` without a service: bodies, URLs and signatures. Each signature is
checked against the test suite's own signing helpers (an oracle independent of the package);
the served tests (tests/integration/test_send.py) check that the service accepts them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ensemble_tap import providers
from ensemble_tap.providers.generic import GenericProvider
from ensemble_tap.send.bodies import (
    DEDICATED,
    SAMPLE_EVENT_TYPES,
    BodyError,
    Kind,
    file_body,
    kind_of,
    sample_body,
)
from ensemble_tap.send.delivery import Accepted, Answer, build, webhook_url
from ensemble_tap.send.errors import SendError
from tests.support.signing import b64_hmac, hex_hmac, hubspot_v3, stripe_header

FIXTURES = Path(__file__).parent.parent / "fixtures"
NOW_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
SECRET = "whsec_unit"
URL = "http://127.0.0.1:8080/webhooks/x"


def _json(body: bytes) -> Any:
    return json.loads(body)


def test_every_dedicated_provider_has_a_signer_and_other_names_are_generic() -> None:
    assert set(DEDICATED) == {
        name
        for name in providers.REGISTRY.names()
        if providers.REGISTRY.has_dedicated_webhook(name)
    }
    for kind in DEDICATED:
        assert kind_of(kind) == kind
        assert not isinstance(providers.webhook_provider(kind), GenericProvider)
    assert kind_of("acme") == "generic"
    assert isinstance(providers.webhook_provider("acme"), GenericProvider)


@pytest.mark.parametrize("kind", [*DEDICATED, "generic"])
def test_each_sample_is_new_each_time_and_names_its_event_type(kind: Kind) -> None:
    first = sample_body(kind, None, NOW_NS)
    second = sample_body(kind, None, NOW_NS)
    assert first.event_type == SAMPLE_EVENT_TYPES[kind]
    document = _json(first.content)
    if kind == "stripe":
        assert document["id"].startswith("evt_") and len(document["id"]) == 28
        assert document["id"] != _json(second.content)["id"]
        assert document["created"] == NOW_NS // 1_000_000_000
        assert document["type"] == "setup_intent.created"
    elif kind == "hubspot":
        [event] = document
        assert event["eventId"] != _json(second.content)[0]["eventId"]
        assert event["occurredAt"] == NOW_NS // 1_000_000
        assert event["subscriptionType"] == "contact.creation"
    elif kind == "linear":
        assert document["webhookTimestamp"] == NOW_NS // 1_000_000
        assert document["createdAt"] == "2026-01-01T00:00:00.123Z"
        assert (document["type"], document["action"]) == ("Issue", "create")
    elif kind == "generic":
        assert document["timestamp"] == "2026-01-01T00:00:00.123Z"
    else:  # GitHub and Shopify identify a delivery in headers: the documented body as is
        fixture = {"github": "github/ping.json", "shopify": "shopify/products-update.json"}[kind]
        assert document == json.loads((FIXTURES / fixture).read_text())


@pytest.mark.parametrize(
    ("kind", "event_type", "where"),
    [
        ("stripe", "invoice.paid", lambda d: d["type"]),
        ("hubspot", "deal.propertyChange", lambda d: d[0]["subscriptionType"]),
        ("linear", "Comment.update", lambda d: f"{d['type']}.{d['action']}"),
    ],
)
def test_event_type_is_written_where_the_provider_puts_it_in_the_body(
    kind: Kind, event_type: str, where: Any
) -> None:
    body = sample_body(kind, event_type, NOW_NS)
    assert where(_json(body.content)) == event_type
    assert body.event_type == event_type


def test_a_file_is_sent_byte_for_byte_unless_something_must_change(tmp_path: Path) -> None:
    stripe = FIXTURES / "stripe" / "setup_intent.created.json"
    as_is = file_body(stripe, "stripe", None, NOW_NS)
    assert as_is.content == stripe.read_bytes()
    assert as_is.event_type == "setup_intent.created"
    retyped = file_body(stripe, "stripe", "setup_intent.succeeded", NOW_NS)
    assert _json(retyped.content)["type"] == "setup_intent.succeeded"
    assert _json(retyped.content)["id"] == "evt_1NG8Du2eZvKYlo2CUI79vXWy"  # the file's own id

    # Linear signs its send time inside the body: a file's old webhookTimestamp is renewed.
    linear = file_body(FIXTURES / "linear" / "issue-update.json", "linear", None, NOW_NS)
    assert _json(linear.content)["webhookTimestamp"] == NOW_NS // 1_000_000
    assert linear.event_type == "Issue.update"

    # HubSpot's older field name is kept in step with the new one.
    hubspot = FIXTURES / "hubspot" / "contact.propertyChange.json"
    [event] = _json(file_body(hubspot, "hubspot", "deal.creation", NOW_NS).content)
    assert event["subscriptionType"] == event["eventType"] == "deal.creation"

    big = tmp_path / "big.json"
    big.write_text('{"id": 123456789012345678901234567890, "amount": 1.5}')
    assert _json(file_body(big, "generic", "x.y", NOW_NS).content) == {
        "id": 123456789012345678901234567890,
        "amount": 1.5,
    }


def test_a_bad_file_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    array = tmp_path / "array.json"
    array.write_text("[1, 2]")
    with pytest.raises(BodyError, match=r"^cannot read --file .*missing\.json: No such file"):
        file_body(tmp_path / "missing.json", "generic", None, NOW_NS)
    with pytest.raises(BodyError, match=r"^--file .*broken\.json is not JSON: "):
        file_body(broken, "generic", None, NOW_NS)
    with pytest.raises(BodyError, match="must be a Stripe event, a JSON object"):
        file_body(array, "stripe", "invoice.paid", NOW_NS)
    assert issubclass(BodyError, SendError)


def test_the_webhook_url_is_base_plus_base_path_provider_and_tenant() -> None:
    assert webhook_url("http://h:8080/", "/webhooks", "acme") == "http://h:8080/webhooks/acme"
    assert webhook_url("https://h", "hooks/", "acme", "t-1") == "https://h/hooks/acme/t-1"
    # A proxy's path prefix in BASE is kept; odd characters are escaped.
    assert webhook_url("https://h/tap", "/webhooks", "a b", "x/y") == (
        "https://h/tap/webhooks/a%20b/x%2Fy"
    )
    for bad in ("localhost:8080", "ftp://h", "http://", "http://h/?q=1"):
        with pytest.raises(SendError, match="--url must"):
            webhook_url(bad, "/webhooks", "acme")


def _delivery(kind: Kind, url: str = URL, event_type: str | None = None) -> tuple[bytes, Any]:
    body = sample_body(kind, event_type, NOW_NS)
    delivery = build(kind, url, SECRET, body, NOW_NS)
    assert delivery.body == body.content
    assert delivery.headers["User-Agent"].startswith("ensemble-tap-send/")
    return delivery.body, delivery.headers


def test_stripe_signs_the_timestamp_and_body() -> None:
    body, headers = _delivery("stripe")
    assert headers["Stripe-Signature"] == stripe_header(SECRET, body, NOW_NS // 1_000_000_000)
    assert headers["Content-Type"] == "application/json; charset=utf-8"


def test_github_signs_sha256_and_sha1_and_names_event_delivery_and_hook() -> None:
    body, headers = _delivery("github", event_type="issues")
    assert headers["X-Hub-Signature-256"] == "sha256=" + hex_hmac(SECRET, body)
    assert headers["X-Hub-Signature"] == "sha1=" + hex_hmac(SECRET, body, "sha1")
    assert headers["X-GitHub-Event"] == "issues"
    assert len(headers["X-GitHub-Delivery"]) == 36
    assert headers["X-GitHub-Hook-ID"] == "109948940"  # the ping's hook_id
    assert headers["X-GitHub-Hook-Installation-Target-Type"] == "repository"
    assert headers["X-GitHub-Hook-Installation-Target-ID"] == "186853261"
    _, again = _delivery("github")
    assert again["X-GitHub-Delivery"] != headers["X-GitHub-Delivery"]


@pytest.mark.parametrize(
    ("url", "signed_url", "forwarded_proto"),
    [
        # The service assumes https unless told: a plain-http URL says so itself.
        (
            "http://127.0.0.1:8080/webhooks/hubspot",
            "http://127.0.0.1:8080/webhooks/hubspot",
            "http",
        ),
        # The default port is not in the Host header httpx sends, so not in the URI either.
        (
            "https://tap.example.com:443/webhooks/hubspot",
            "https://tap.example.com/webhooks/hubspot",
            None,
        ),
        # HubSpot decodes :, @, ! … before signing and keeps other escapes.
        (
            "https://tap.example.com/in%3Abound/webhooks/hubspot/t%40x%20y",
            "https://tap.example.com/in:bound/webhooks/hubspot/t@x%20y",
            None,
        ),
    ],
)
def test_hubspot_v3_signs_method_uri_body_and_timestamp(
    url: str, signed_url: str, forwarded_proto: str | None
) -> None:
    body, headers = _delivery("hubspot", url)
    timestamp = NOW_NS // 1_000_000
    assert headers["X-HubSpot-Request-Timestamp"] == str(timestamp)
    assert headers["X-HubSpot-Signature-v3"] == hubspot_v3(
        SECRET, "POST", signed_url, body, timestamp
    )
    assert headers.get("X-Forwarded-Proto") == forwarded_proto
    # The v1 signature HubSpot sends beside it: SHA-256 of secret + body.

    assert headers["X-HubSpot-Signature"] == hashlib.sha256(SECRET.encode() + body).hexdigest()
    assert headers["X-HubSpot-Signature-Version"] == "v1"


def test_linear_signs_the_body_that_holds_its_send_time() -> None:
    body, headers = _delivery("linear", event_type="Comment.update")
    assert headers["Linear-Signature"] == hex_hmac(SECRET, body)
    assert headers["Linear-Event"] == "Comment"
    assert len(headers["Linear-Delivery"]) == 36
    assert _json(body)["webhookTimestamp"] == NOW_NS // 1_000_000


def test_shopify_signs_base64_and_names_topic_ids_and_time() -> None:
    body, headers = _delivery("shopify", event_type="orders/paid")
    assert headers["X-Shopify-Hmac-Sha256"] == b64_hmac(SECRET, body)
    assert headers["X-Shopify-Topic"] == "orders/paid"
    assert headers["X-Shopify-Triggered-At"] == "2026-01-01T00:00:00.123456Z"
    assert headers["X-Shopify-Webhook-Id"] != headers["X-Shopify-Event-Id"]


def test_generic_signs_hex_with_the_sha256_prefix() -> None:
    body, headers = _delivery("generic", event_type="invoice.paid")
    assert headers["X-Signature"] == "sha256=" + hex_hmac(SECRET, body)
    assert headers["X-Event-Type"] == "invoice.paid"
    assert headers["X-Event-Id"].startswith("evt_")


def test_the_answer_names_each_accepted_event() -> None:
    single = b'{"id":"e1","request_id":"r","status":"accepted","subject":"s1","type":"t"}'
    batch = (
        b'{"id":"e1","request_id":"r","status":"accepted","subject":"s1","type":"t",'
        b'"events":[{"id":"e1","subject":"s1","type":"t"},{"id":"e2","subject":"s2","type":"t"}]}'
    )
    assert Answer(202, "Accepted", "r", single).accepted() == [Accepted("e1", "s1")]
    assert Answer(202, "Accepted", "r", batch).accepted() == [
        Accepted("e1", "s1"),
        Accepted("e2", "s2"),
    ]
    assert Answer(401, "Unauthorized", "r", b"signature verification failed").accepted() == []
