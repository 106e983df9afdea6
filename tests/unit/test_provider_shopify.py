"""Shopify webhooks (docs/compatibility.md: the reference's behaviour and this project's fixes).

Fixed behaviours: the dedup key is ``X-Shopify-Webhook-Id`` (stable across retries), falling back
to ``X-Shopify-Event-Id``; a missing topic is a bad payload instead of ``event.updated``. The
CloudEvent id is ``X-Shopify-Webhook-Id`` too: the Event-Id is shared by every delivery one
merchant action produces.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from ensemble_tap.envelopes import envelope_for
from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers import webhook_provider
from ensemble_tap.providers.base import (
    BadPayload,
    Extraction,
    SecretNotConfigured,
    VerificationFailed,
)
from ensemble_tap.providers.shopify import ShopifyProvider
from tests.unit.webhooks import hmac_b64, hmac_hex, make_request, settings, sha256_hex

PROVIDER = ShopifyProvider()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"
# The documented example headers (tests/fixtures/shopify/README.md); the topic is per fixture.
DOCUMENTED_HEADERS = {
    "X-Shopify-Shop-Domain": "snowdevil.myshopify.com",
    "X-Shopify-API-Version": "2026-07",
    "X-Shopify-Webhook-Id": "545ebdd4-b7be-4d3d-b14e-54aa78e0e0f9",
    "X-Shopify-Triggered-At": "2025-07-10T16:15:47.000000Z",
    "X-Shopify-Event-Id": "59d6d79c-595f-4e7e-bc6f-72f5c3d0c66f",
    "X-Shopify-Name": "product-sync",
}

# The reference's published test vectors: "Shopify".
SECRET = "shopify-secret"
BODY = b'{"id":123}'
SIGNATURE = "EXNRC+CU7y++ES6DX710HezSad232lftu/6KGtznpow="


def verify(signature: str | None, body: bytes = BODY, secret: str | list[str] = SECRET) -> None:
    headers = {} if signature is None else {"X-Shopify-Hmac-SHA256": signature}
    PROVIDER.verify(make_request(body, headers), settings(secret=secret), "shopify")


def extract_one(body: bytes = BODY, /, **headers: str) -> Extraction:
    [found] = PROVIDER.extract(make_request(body, headers))
    return found


class TestVerify:
    def test_the_spec_vector_verifies(self) -> None:
        verify(SIGNATURE)

    def test_spec_negative_invalid(self) -> None:
        with pytest.raises(VerificationFailed):
            verify("invalid")

    @pytest.mark.parametrize("signature", [None, "", "  "])
    def test_a_missing_signature_is_rejected(self, signature: str | None) -> None:
        with pytest.raises(VerificationFailed, match="X-Shopify-Hmac-SHA256"):
            verify(signature)

    def test_a_wrong_secret_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            verify(hmac_b64("other", BODY))

    def test_a_tampered_body_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            verify(SIGNATURE, body=b'{"id":124}')

    def test_unpadded_base64_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="decode signature"):
            verify(SIGNATURE.rstrip("="))

    def test_a_hex_signature_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed):
            verify(hmac_hex(SECRET, BODY))

    def test_the_second_secret_of_a_rotation_list_verifies(self) -> None:
        verify(SIGNATURE, secret=["old", SECRET])

    def test_no_secret_is_a_configuration_error(self) -> None:
        with pytest.raises(SecretNotConfigured):
            verify(SIGNATURE, secret=[])


class TestExtract:
    def test_orders_paid(self) -> None:
        found = extract_one(
            b'{"id":820982911946154508,"total_price":"10.00"}',
            **{
                "X-Shopify-Topic": "orders/paid",
                "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
            },
        )
        assert (found.entity_type, found.action, found.entity_id) == (
            "orders",
            "paid",
            "820982911946154508",
        )
        assert found.dedup_key == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
        assert found.provider_event_id == "98880550-7158-44d4-b7cd-2c97c8a091b5"
        assert found.snapshot == {"id": 820982911946154508, "total_price": "10.00"}

    def test_without_a_webhook_id_the_event_id_is_the_dedup_key(self) -> None:
        found = extract_one(**{"X-Shopify-Topic": "orders/paid", "X-Shopify-Event-Id": "ev-1"})
        assert found.dedup_key == "ev-1"
        assert found.provider_event_id == "ev-1"

    def test_without_either_id_dedup_is_left_to_the_digest(self) -> None:
        found = extract_one(**{"X-Shopify-Topic": "orders/paid"})
        assert found.dedup_key == ""
        assert found.payload_digest == sha256_hex(BODY)

    @pytest.mark.parametrize(
        ("topic", "entity", "action"),
        [
            ("orders/paid", "orders", "paid"),
            ("Orders/Create", "orders", "create"),
            ("app/uninstalled", "app", "uninstalled"),
            ("customers/data_request", "customers", "data_request"),
            ("shop", "shop", "updated"),
            ("a/b/c", "a.b", "c"),
            ("orders//paid/", "orders", "paid"),
            ("orders/ /paid", "orders", "paid"),
        ],
    )
    def test_the_topic_gives_entity_and_action(self, topic: str, entity: str, action: str) -> None:
        found = extract_one(**{"X-Shopify-Topic": topic})
        assert (found.entity_type, found.action) == (entity, action)

    @pytest.mark.parametrize("topic", [None, "", "  ", "/", "//", " / "])
    def test_a_missing_topic_is_a_bad_payload(self, topic: str | None) -> None:
        headers = {} if topic is None else {"X-Shopify-Topic": topic}
        with pytest.raises(BadPayload, match="X-Shopify-Topic") as info:
            extract_one(**headers)
        assert info.value.status == 400

    def test_the_graphql_id_is_the_fallback_entity_id(self) -> None:
        found = extract_one(
            b'{"admin_graphql_api_id":"gid://shopify/Order/44"}',
            **{"X-Shopify-Topic": "orders/paid"},
        )
        assert found.entity_id == "gid://shopify/Order/44"

    def test_without_any_id_the_entity_is_unknown(self) -> None:
        assert extract_one(b"{}", **{"X-Shopify-Topic": "shop/update"}).entity_id == "unknown"

    def test_the_triggered_at_header_is_the_provider_time(self) -> None:
        found = extract_one(
            **{"X-Shopify-Topic": "orders/paid", "X-Shopify-Triggered-At": "2024-03-04T14:22:00.5Z"}
        )
        assert found.provider_time_ns == parse_rfc3339_ns("2024-03-04T14:22:00.5Z")

    @pytest.mark.parametrize("triggered_at", [None, "", "yesterday"])
    def test_without_a_usable_triggered_at_there_is_no_provider_time(
        self, triggered_at: str | None
    ) -> None:
        headers = {"X-Shopify-Topic": "orders/paid"}
        if triggered_at is not None:
            headers["X-Shopify-Triggered-At"] = triggered_at
        assert extract_one(**headers).provider_time_ns is None

    @pytest.mark.parametrize("body", [b"[]", b'"x"', b"not json", b""])
    def test_a_body_that_is_not_an_object_is_a_bad_payload(self, body: bytes) -> None:
        with pytest.raises(BadPayload):
            extract_one(body, **{"X-Shopify-Topic": "orders/paid"})


class TestDocumentedPayloads:
    @pytest.mark.parametrize(
        ("topic", "entity_type", "entity_id", "action"),
        [
            ("products/update", "products", "9554194432293", "update"),
            ("customers/delete", "customers", "706405506930370084", "delete"),
            (
                "app_subscriptions/update",
                "app_subscriptions",
                "gid://shopify/AppSubscription/1029266977",
                "update",
            ),
        ],
    )
    def test_each_documented_delivery(
        self, topic: str, entity_type: str, entity_id: str, action: str
    ) -> None:
        body = (FIXTURES / f"{topic.replace('/', '-')}.json").read_bytes()
        verify(hmac_b64(SECRET, body), body=body)
        found = extract_one(body, **DOCUMENTED_HEADERS, **{"X-Shopify-Topic": topic})
        assert (found.entity_type, found.entity_id, found.action) == (
            entity_type,
            entity_id,
            action,
        )
        assert found.provider_time_ns == parse_rfc3339_ns("2025-07-10T16:15:47Z")
        assert found.provider_event_id == "59d6d79c-595f-4e7e-bc6f-72f5c3d0c66f"
        assert found.dedup_key == found.event_id == "545ebdd4-b7be-4d3d-b14e-54aa78e0e0f9"
        assert found.snapshot == json.loads(body)

    def test_a_wrapped_record_without_any_id_is_unknown(self) -> None:
        found = extract_one(b'{"app_subscription":{"name":"x"}}', **{"X-Shopify-Topic": "a/b"})
        assert found.entity_id == "unknown"

    def test_deliveries_of_one_merchant_action_are_distinct_cloudevents(self) -> None:
        """Shopify: X-Shopify-Event-Id is "shared across all deliveries from the same merchant
        action"; the sink keys rows by the CloudEvent id, so that id is the Webhook-Id."""
        envelopes = []
        for topic, webhook_id in (("orders/create", "wh-create"), ("orders/paid", "wh-paid")):
            headers = {
                "X-Shopify-Topic": topic,
                "X-Shopify-Webhook-Id": webhook_id,
                "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
            }
            found = extract_one(b'{"id":820982911946154508}', **headers)
            envelope, msg_id = envelope_for(found, "shopify", "", "req-1", 1, "ensemble", False)
            assert msg_id == f"shopify::{webhook_id}"
            envelopes.append(envelope)
        assert [e.event_id for e in envelopes] == ["wh-create", "wh-paid"]
        for envelope in envelopes:
            data = orjson.loads(envelope.body)["data"]
            assert data["provider_event_id"] == "98880550-7158-44d4-b7cd-2c97c8a091b5"

    def test_without_a_webhook_id_the_event_id_is_the_cloudevent_id(self) -> None:
        found = extract_one(**{"X-Shopify-Topic": "orders/paid", "X-Shopify-Event-Id": "ev-1"})
        envelope, _ = envelope_for(found, "shopify", "", "req-1", 1, "ensemble", False)
        assert envelope.event_id == "ev-1"


def test_shopify_has_its_dedicated_provider() -> None:
    assert isinstance(webhook_provider("shopify"), ShopifyProvider)
