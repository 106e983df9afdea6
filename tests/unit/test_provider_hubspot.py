"""HubSpot webhooks (spec §2.5, §3.3, with the §9 fixes).

Fixed behaviours: a batch of up to 100 events gives one extraction per event; entity from
``objectType`` else the ``subscriptionType`` prefix; ``eventId``-based dedup; ``occurredAt`` in
epoch milliseconds; signature v1/v2 accepted only when listed in ``signature_versions``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers import webhook_provider
from ensemble_tap.providers.base import (
    BadPayload,
    SecretNotConfigured,
    VerificationFailed,
    WebhookRequest,
)
from ensemble_tap.providers.hubspot import HubSpotProvider, signed_url
from tests.unit.webhooks import NS, VECTOR_NS, hmac_b64, make_request, settings

PROVIDER = HubSpotProvider()

# §2.10 "HubSpot (clock frozen near ts)".
SECRET = "hubspot-secret"
BODY = (
    b'[{"subscriptionType":"deal.propertyChange","objectType":"deal","objectId":321,'
    b'"propertyName":"dealstage","propertyValue":"closedwon"}]'
)
TIMESTAMP = "1709562120000"
SIGNATURE = "GWDPV7DVtC93pXVHn7uDLILlFdy6d+y2i5tjAicQDuk="
URL = "https://tap.example.com/webhooks/hubspot?foo=bar"


def hubspot_request(
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    *,
    received_ns: int = VECTOR_NS,
    **target: Any,
) -> WebhookRequest:
    """A POST to http://tap.example.com/webhooks/hubspot?foo=bar (TLS ended at a proxy)."""
    target = {
        "host": "tap.example.com",
        "raw_path": "/webhooks/hubspot",
        "query_string": "foo=bar",
    } | target
    return make_request(body, headers, received_ns=received_ns, **target)


def v3_headers(
    body: bytes = BODY,
    timestamp: str = TIMESTAMP,
    secret: str = SECRET,
    url: str = URL,
    method: str = "POST",
) -> dict[str, str]:
    signed = (method + url).encode() + body + timestamp.encode()
    return {
        "X-HubSpot-Signature-v3": hmac_b64(secret, signed),
        "X-HubSpot-Request-Timestamp": timestamp,
    }


def v1_signature(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def v2_signature(secret: str, method: str, url: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + method.encode() + url.encode() + body).hexdigest()


def extract(elements: Any) -> list[Any]:
    return PROVIDER.extract(hubspot_request(json.dumps(elements).encode()))


class TestVerifyV3:
    def test_the_spec_vector_verifies_with_the_client_secret(self) -> None:
        request = hubspot_request(
            headers={"X-HubSpot-Signature-v3": SIGNATURE, "X-HubSpot-Request-Timestamp": TIMESTAMP}
        )
        PROVIDER.verify(request, settings(client_secret=SECRET), "hubspot")

    def test_the_spec_vector_verifies_with_the_plain_secret(self) -> None:
        PROVIDER.verify(hubspot_request(headers=v3_headers()), settings(secret=SECRET), "hubspot")

    def test_our_signer_reproduces_the_spec_vector(self) -> None:
        assert v3_headers()["X-HubSpot-Signature-v3"] == SIGNATURE

    def test_the_client_secret_wins_over_the_secret(self) -> None:
        request = hubspot_request(headers=v3_headers())
        PROVIDER.verify(request, settings(secret="unrelated", client_secret=SECRET), "hubspot")
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            PROVIDER.verify(request, settings(secret=SECRET, client_secret="other"), "hubspot")

    def test_the_second_secret_of_a_rotation_list_verifies(self) -> None:
        request = hubspot_request(headers=v3_headers())
        PROVIDER.verify(request, settings(secret=["retired", SECRET]), "hubspot")

    def test_neither_secret_is_a_configuration_error(self) -> None:
        with pytest.raises(SecretNotConfigured):
            PROVIDER.verify(
                hubspot_request(headers=v3_headers()), settings(client_secret="  "), "hubspot"
            )

    def test_a_wrong_secret_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            PROVIDER.verify(
                hubspot_request(headers=v3_headers()), settings(secret="other"), "hubspot"
            )

    @pytest.mark.parametrize(
        "change",
        [
            {"body": BODY.replace(b"321", b"322")},
            {"method": "PUT"},
            {"query_string": "foo=baz"},
            {"raw_path": "/webhooks/hubspot/tenant-a"},
            {"host": "evil.example.com"},
        ],
        ids=["body", "method", "query", "path", "host"],
    )
    def test_every_signed_part_matters(self, change: dict[str, Any]) -> None:
        body = change.pop("body", BODY)
        request = hubspot_request(body, v3_headers(), **change)
        with pytest.raises(VerificationFailed):
            PROVIDER.verify(request, settings(secret=SECRET), "hubspot")

    def test_a_missing_signature_is_rejected(self) -> None:
        request = hubspot_request(headers={"X-HubSpot-Request-Timestamp": TIMESTAMP})
        with pytest.raises(VerificationFailed, match="X-HubSpot-Signature-v3"):
            PROVIDER.verify(request, settings(secret=SECRET), "hubspot")

    @pytest.mark.parametrize(
        "signature", ["not base64!", "GWDPV7DVtC93pXVHn7uDLILlFdy6d-y2i5tjAicQDuk="]
    )
    def test_a_malformed_signature_is_rejected(self, signature: str) -> None:
        headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": TIMESTAMP}
        with pytest.raises(VerificationFailed, match="decode signature"):
            PROVIDER.verify(hubspot_request(headers=headers), settings(secret=SECRET), "hubspot")

    def test_a_missing_timestamp_is_rejected(self) -> None:
        headers = {"X-HubSpot-Signature-v3": SIGNATURE}
        with pytest.raises(VerificationFailed, match="empty timestamp"):
            PROVIDER.verify(hubspot_request(headers=headers), settings(secret=SECRET), "hubspot")

    def test_an_unparseable_timestamp_is_rejected(self) -> None:
        headers = v3_headers(timestamp="tuesday")
        with pytest.raises(VerificationFailed, match="unsupported timestamp format"):
            PROVIDER.verify(hubspot_request(headers=headers), settings(secret=SECRET), "hubspot")


class TestTimestampWindow:
    @pytest.mark.parametrize(
        ("offset_seconds", "accepted"),
        [
            (-600, False),
            (-301, False),
            (-300, True),
            (0, True),
            (300, True),
            (301, False),
            (600, False),
        ],
    )
    def test_the_window_is_plus_or_minus_five_minutes(
        self, offset_seconds: int, accepted: bool
    ) -> None:
        """Negative offsets are timestamps in the past (spec: 10 minutes old is rejected)."""
        timestamp = str(1709562120000 + offset_seconds * 1000)
        request = hubspot_request(headers=v3_headers(timestamp=timestamp))
        if accepted:
            PROVIDER.verify(request, settings(secret=SECRET), "hubspot")
        else:
            with pytest.raises(VerificationFailed, match="outside max age window"):
                PROVIDER.verify(request, settings(secret=SECRET), "hubspot")

    @pytest.mark.parametrize(
        "timestamp", ["1709562120", "2024-03-04T14:22:00Z", "2024-03-04T15:22:00+01:00"]
    )
    def test_seconds_and_rfc3339_timestamps_are_accepted(self, timestamp: str) -> None:
        request = hubspot_request(headers=v3_headers(timestamp=timestamp))
        PROVIDER.verify(request, settings(secret=SECRET), "hubspot")

    def test_the_timestamp_is_signed_as_sent(self) -> None:
        headers = v3_headers(timestamp=TIMESTAMP)
        headers["X-HubSpot-Request-Timestamp"] = "1709562120"
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            PROVIDER.verify(hubspot_request(headers=headers), settings(secret=SECRET), "hubspot")


class TestSignedUrl:
    def test_forwarded_scheme_and_host_replace_the_internal_ones(self) -> None:
        request = make_request(
            headers={"X-Forwarded-Proto": "http", "X-Forwarded-Host": "hooks.example.com"},
            scheme="http",
            host="internal.local",
            raw_path="/webhooks/hubspot",
            query_string="foo=bar",
        )
        assert signed_url(request) == "http://hooks.example.com/webhooks/hubspot?foo=bar"

    def test_without_forwarded_headers_the_scheme_is_https_and_the_host_header_is_used(
        self,
    ) -> None:
        request = make_request(scheme="http", host="platform.local", raw_path="/webhooks/hubspot")
        assert signed_url(request) == "https://platform.local/webhooks/hubspot"

    def test_the_host_port_and_tenant_segment_are_kept(self) -> None:
        request = make_request(host="platform.local:8443", raw_path="/webhooks/hubspot/tenant-a")
        assert signed_url(request) == "https://platform.local:8443/webhooks/hubspot/tenant-a"

    def test_forwarded_values_are_trimmed(self) -> None:
        request = make_request(
            headers={"X-Forwarded-Proto": " http ", "X-Forwarded-Host": " a.example "},
            raw_path="/h",
        )
        assert signed_url(request) == "http://a.example/h"

    def test_hubspot_decodes_its_listed_escapes_and_keeps_the_others(self) -> None:
        request = make_request(
            host="h",
            raw_path="/webhooks/hubspot",
            query_string="e=a%40b.com&x=%3A%2F%3F%21%24%27%28%29%2A%2C%3B&y=%3a%2f&keep=%20%2B%26",
        )
        assert signed_url(request) == (
            "https://h/webhooks/hubspot?e=a@b.com&x=:/?!$'()*,;&y=:/&keep=%20%2B%26"
        )

    def test_a_request_with_escapes_verifies_over_the_decoded_url(self) -> None:
        request = hubspot_request(
            headers=v3_headers(url="https://tap.example.com/webhooks/hubspot?email=a@b.com"),
            query_string="email=a%40b.com",
        )
        PROVIDER.verify(request, settings(secret=SECRET), "hubspot")


class TestLegacySignatures:
    def test_v1_is_refused_unless_enabled(self) -> None:
        request = hubspot_request(headers={"X-HubSpot-Signature": v1_signature(SECRET, BODY)})
        with pytest.raises(VerificationFailed, match="X-HubSpot-Signature-v3"):
            PROVIDER.verify(request, settings(secret=SECRET), "hubspot")

    @pytest.mark.parametrize(
        "version_header",
        [{}, {"X-HubSpot-Signature-Version": "v1"}, {"X-HubSpot-Signature-Version": "V1"}],
    )
    def test_v1_verifies_when_enabled(self, version_header: dict[str, str]) -> None:
        headers = {"X-HubSpot-Signature": v1_signature(SECRET, BODY), **version_header}
        config = settings(client_secret=SECRET, signature_versions=["v3", "v1"])
        PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")

    def test_v2_verifies_when_enabled(self) -> None:
        headers = {
            "X-HubSpot-Signature": v2_signature(SECRET, "POST", URL, BODY),
            "X-HubSpot-Signature-Version": "v2",
        }
        config = settings(secret=SECRET, signature_versions=["v2"])
        PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")

    def test_v2_is_refused_when_only_v1_is_enabled(self) -> None:
        headers = {
            "X-HubSpot-Signature": v2_signature(SECRET, "POST", URL, BODY),
            "X-HubSpot-Signature-Version": "v2",
        }
        config = settings(secret=SECRET, signature_versions=["v1"])
        with pytest.raises(VerificationFailed):
            PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")

    def test_a_v2_signature_labelled_v1_is_a_mismatch(self) -> None:
        headers = {
            "X-HubSpot-Signature": v2_signature(SECRET, "POST", URL, BODY),
            "X-HubSpot-Signature-Version": "v1",
        }
        config = settings(secret=SECRET, signature_versions=["v1", "v2"])
        with pytest.raises(VerificationFailed, match="v1 signature mismatch"):
            PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")

    def test_v1_with_a_wrong_secret_is_rejected(self) -> None:
        headers = {"X-HubSpot-Signature": v1_signature("other", BODY)}
        config = settings(secret=SECRET, signature_versions=["v1"])
        with pytest.raises(VerificationFailed, match="v1 signature mismatch"):
            PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")

    def test_v1_with_the_second_rotation_secret_verifies(self) -> None:
        headers = {"X-HubSpot-Signature": v1_signature(SECRET, BODY)}
        config = settings(secret=["old", SECRET], signature_versions=["v1"])
        PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")

    def test_v1_needs_no_timestamp_but_v3_does(self) -> None:
        headers = {"X-HubSpot-Signature": v1_signature(SECRET, BODY)}
        config = settings(secret=SECRET, signature_versions=["v1"])
        PROVIDER.verify(
            hubspot_request(headers=headers, received_ns=VECTOR_NS + 86_400 * NS), config, "hubspot"
        )

    def test_a_v3_signature_is_used_when_present_and_enabled(self) -> None:
        headers = {**v3_headers(), "X-HubSpot-Signature": "00"}
        config = settings(secret=SECRET, signature_versions=["v3", "v1"])
        PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")

    def test_a_v3_header_is_ignored_when_v3_is_not_enabled(self) -> None:
        config = settings(secret=SECRET, signature_versions=["v1"])
        with pytest.raises(VerificationFailed):
            PROVIDER.verify(hubspot_request(headers=v3_headers()), config, "hubspot")

    def test_a_malformed_v1_signature_is_rejected(self) -> None:
        headers = {"X-HubSpot-Signature": "xyz"}
        config = settings(secret=SECRET, signature_versions=["v1"])
        with pytest.raises(VerificationFailed, match="decode signature"):
            PROVIDER.verify(hubspot_request(headers=headers), config, "hubspot")


class TestExtract:
    def test_the_spec_vector_body(self) -> None:
        [found] = PROVIDER.extract(hubspot_request())
        assert (found.entity_type, found.entity_id, found.action) == ("deal", "321", "updated")
        assert found.changes == {"dealstage": {"from": None, "to": "closedwon"}}
        assert found.snapshot == json.loads(BODY)[0]
        assert found.provider_event_id == ""
        assert found.dedup_key == ""
        assert found.provider_time_ns is None

    def test_the_go_normalizer_expectation(self) -> None:
        [found] = extract(
            [
                {
                    "subscriptionType": "deal.propertyChange",
                    "objectType": "deal",
                    "objectId": 12345,
                    "propertyName": "dealstage",
                    "propertyValue": "closedwon",
                    "occurredAt": "2026-03-03T14:22:00Z",
                }
            ]
        )
        assert (found.entity_type, found.action, found.entity_id) == ("deal", "updated", "12345")
        assert found.changes is not None
        assert found.changes["dealstage"]["to"] == "closedwon"
        assert found.provider_time_ns == parse_rfc3339_ns("2026-03-03T14:22:00Z")

    def test_a_contact_creation(self) -> None:
        [found] = extract(
            {"subscriptionType": "contact.creation", "objectType": "contact", "objectId": "c_1"}
        )
        assert (found.entity_type, found.action, found.entity_id) == ("contact", "created", "c_1")

    def test_a_real_hubspot_event(self) -> None:
        """What HubSpot actually sends: no objectType, eventId, occurredAt in milliseconds."""
        [found] = extract(
            [
                {
                    "eventId": 100,
                    "subscriptionId": 42,
                    "portalId": 7,
                    "appId": 9,
                    "occurredAt": 1709562120000,
                    "subscriptionType": "deal.propertyChange",
                    "attemptNumber": 0,
                    "objectId": 321,
                    "changeSource": "CRM",
                    "propertyName": "dealstage",
                    "propertyValue": "closedwon",
                }
            ]
        )
        assert (found.entity_type, found.action, found.entity_id) == ("deal", "updated", "321")
        assert found.provider_event_id == "100"
        assert found.dedup_key == "100:7:42:1709562120000"
        assert found.provider_time_ns == VECTOR_NS

    @pytest.mark.parametrize(
        ("subscription", "action"),
        [
            ("contact.creation", "created"),
            ("company.deletion", "deleted"),
            ("deal.propertyChange", "updated"),
            ("contact.merge", "updated"),
            ("contact.privacyDeletion", "updated"),
            ("Contact.Creation", "created"),
            ("", "updated"),
        ],
    )
    def test_the_action_comes_from_the_subscription_kind(
        self, subscription: str, action: str
    ) -> None:
        [found] = extract([{"subscriptionType": subscription, "objectId": 1}])
        assert found.action == action

    @pytest.mark.parametrize(
        ("element", "entity"),
        [
            ({"subscriptionType": "deal.propertyChange"}, "deal"),
            ({"subscriptionType": "deal.propertyChange", "objectType": "COMPANY"}, "company"),
            ({"subscriptionType": "deal.creation", "objectType": "  "}, "deal"),
            ({}, "object"),
            ({"objectType": 5}, "5"),
        ],
    )
    def test_the_entity_is_the_object_type_else_the_subscription_prefix(
        self, element: dict[str, Any], entity: str
    ) -> None:
        [found] = extract([element])
        assert found.entity_type == entity

    def test_a_batch_gives_one_extraction_per_event_in_order(self) -> None:
        elements = [
            {"eventId": n, "objectId": n, "subscriptionType": "contact.creation"} for n in range(3)
        ]
        found = extract(elements)
        assert [x.entity_id for x in found] == ["0", "1", "2"]
        assert [x.provider_event_id for x in found] == ["0", "1", "2"]
        assert len({x.payload_digest for x in found}) == 3

    def test_a_batch_of_100_is_accepted(self) -> None:
        assert len(extract([{"objectId": n} for n in range(100)])) == 100

    def test_a_batch_of_101_is_a_bad_payload(self) -> None:
        with pytest.raises(BadPayload, match="more than 100"):
            extract([{"objectId": n} for n in range(101)])

    def test_a_single_object_is_a_batch_of_one(self) -> None:
        assert len(extract({"objectId": 1})) == 1

    @pytest.mark.parametrize(
        "body",
        [b"[]", b"[1]", b'[{"objectId":1},"x"]', b"5", b'"x"', b"null", b"not json", b""],
        ids=["empty", "number-element", "mixed", "number", "string", "null", "text", "no-body"],
    )
    def test_unusable_bodies_are_bad_payloads(self, body: bytes) -> None:
        with pytest.raises(BadPayload):
            PROVIDER.extract(hubspot_request(body))

    def test_the_event_digest_ignores_key_order(self) -> None:
        [a] = PROVIDER.extract(hubspot_request(b'[{"objectId":1,"eventId":2}]'))
        [b] = PROVIDER.extract(hubspot_request(b'[{"eventId":2,"objectId":1}]'))
        assert a.payload_digest == b.payload_digest

    def test_the_dedup_key_without_optional_fields(self) -> None:
        [found] = extract([{"eventId": "e1"}])
        assert found.dedup_key == "e1:::"

    def test_without_a_property_name_there_are_no_changes(self) -> None:
        [found] = extract([{"propertyValue": "x"}])
        assert found.changes is None

    def test_a_property_change_without_a_value_changes_to_none(self) -> None:
        [found] = extract([{"propertyName": "amount"}])
        assert found.changes == {"amount": {"from": None, "to": None}}

    def test_a_missing_object_id_is_unknown(self) -> None:
        [found] = extract([{"subscriptionType": "deal.creation"}])
        assert found.entity_id == "unknown"

    def test_a_long_object_id_keeps_every_digit(self) -> None:
        [found] = PROVIDER.extract(hubspot_request(b'[{"objectId":1234567890123456789012345}]'))
        assert found.entity_id == "1234567890123456789012345"

    @pytest.mark.parametrize(
        ("occurred_at", "expected"),
        [
            (1709562120000, VECTOR_NS),
            ("1709562120000", VECTOR_NS),
            ("2024-03-04T14:22:00Z", VECTOR_NS),
            (1709562120, VECTOR_NS),
            ("yesterday", None),
            (None, None),
            (True, None),
        ],
    )
    def test_occurred_at(self, occurred_at: Any, expected: int | None) -> None:
        [found] = extract([{"occurredAt": occurred_at}])
        assert found.provider_time_ns == expected


def test_hubspot_has_its_dedicated_provider() -> None:
    assert isinstance(webhook_provider("hubspot"), HubSpotProvider)
