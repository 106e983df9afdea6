"""HubSpot webhooks (docs/compatibility.md: the reference's behaviour and this project's fixes).

Fixed behaviours: a batch of up to 100 events gives one extraction per event; entity from
``objectType`` else the ``subscriptionType`` prefix; ``eventId``-based dedup; ``occurredAt`` in
epoch milliseconds; signature v1/v2 accepted only when listed in ``signature_versions``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from ensemble_tap.envelopes import envelope_for
from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers import webhook_provider
from ensemble_tap.providers.base import (
    BadPayload,
    SecretNotConfigured,
    VerificationFailed,
    WebhookRequest,
)
from ensemble_tap.providers.hubspot import (
    OBJECT_NAMES,
    HubSpotProvider,
    HubSpotSearch,
    request_url,
    signed_url,
)
from tests.support.hubspot import contact_creation
from tests.unit.webhooks import NS, VECTOR_NS, hmac_b64, make_request, settings

PROVIDER = HubSpotProvider()
# HubSpot's documented payloads, one file per event type (README.md there names the pages).
FIXTURES = Path(__file__).parents[1] / "fixtures" / "hubspot"
# The client secret of HubSpot's v1/v2 validation examples.
DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"


def fixture(event_type: str) -> bytes:
    return (FIXTURES / f"{event_type}.json").read_bytes().strip()


# The reference's published test vectors: "HubSpot (clock frozen near ts)".
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


class TestV2SignsTheUrlAsReceived:
    """v2: "The URI used to build the source string must exactly match the original request"
    (https://legacydocs.hubspot.com/docs/faq/v2-request-validation); v3 alone decodes."""

    def test_the_documented_v2_example_verifies(self) -> None:
        body = b'{"example_field":"example_value"}'
        headers = {
            "X-HubSpot-Signature": (
                "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"
            ),
            "X-HubSpot-Signature-Version": "v2",
        }
        request = make_request(body, headers, host="www.example.com", raw_path="/webhook_uri")
        config = settings(client_secret=DOC_SECRET, signature_versions=["v2"])
        PROVIDER.verify(request, config, "hubspot")

    def test_our_v2_signer_reproduces_the_documented_example(self) -> None:
        url = "https://www.example.com/webhook_uri"
        signature = v2_signature(DOC_SECRET, "POST", url, b'{"example_field":"example_value"}')
        assert signature == "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"

    def test_percent_escapes_in_the_query_are_signed_as_sent(self) -> None:
        url = "https://tap.example.com/webhooks/hubspot?a=%20x%2Fy"
        headers = {
            "X-HubSpot-Signature": v2_signature(SECRET, "POST", url, BODY),
            "X-HubSpot-Signature-Version": "v2",
        }
        request = hubspot_request(headers=headers, query_string="a=%20x%2Fy")
        PROVIDER.verify(request, settings(secret=SECRET, signature_versions=["v2"]), "hubspot")

    def test_a_v2_signature_over_the_v3_decoded_url_is_rejected(self) -> None:
        decoded = "https://tap.example.com/webhooks/hubspot?a=%20x/y"
        headers = {
            "X-HubSpot-Signature": v2_signature(SECRET, "POST", decoded, BODY),
            "X-HubSpot-Signature-Version": "v2",
        }
        request = hubspot_request(headers=headers, query_string="a=%20x%2Fy")
        with pytest.raises(VerificationFailed, match="v2 signature mismatch"):
            PROVIDER.verify(request, settings(secret=SECRET, signature_versions=["v2"]), "hubspot")

    def test_v3_still_decodes_the_same_query(self) -> None:
        request = hubspot_request(
            headers=v3_headers(url="https://tap.example.com/webhooks/hubspot?a=%20x/y"),
            query_string="a=%20x%2Fy",
        )
        PROVIDER.verify(request, settings(secret=SECRET), "hubspot")

    def test_request_url_keeps_every_escape(self) -> None:
        request = make_request(host="h", raw_path="/webhooks/hubspot", query_string="e=a%40b%2F")
        assert request_url(request) == "https://h/webhooks/hubspot?e=a%40b%2F"
        assert signed_url(request) == "https://h/webhooks/hubspot?e=a@b/"


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


class TestDocumentedPayloads:
    def test_contact_creation_with_its_documented_v1_signature(self) -> None:
        headers = {
            "X-HubSpot-Signature": (
                "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
            ),
            "X-HubSpot-Signature-Version": "v1",
        }
        request = hubspot_request(fixture("contact.creation"), headers)
        config = settings(client_secret=DOC_SECRET, signature_versions=["v1"])
        PROVIDER.verify(request, config, "hubspot")
        [found] = PROVIDER.extract(request)
        assert (found.entity_type, found.entity_id, found.action) == ("contact", "123", "created")
        assert found.provider_event_id == "1"
        assert found.dedup_key == found.event_id == "1:62515:12345:1564113600000"
        assert found.provider_time_ns == 1_564_113_600_000 * 1_000_000

    def test_contact_property_change_named_by_event_type(self) -> None:
        """The webhooks guide's sample names the subscription ``eventType``."""
        [found] = PROVIDER.extract(hubspot_request(fixture("contact.propertyChange")))
        assert (found.entity_type, found.entity_id, found.action) == (
            "contact",
            "1246965",
            "updated",
        )
        assert found.changes == {"lifecyclestage": {"from": None, "to": "subscriber"}}
        assert found.event_id == "3816279340:33:25:1462216307945"
        assert found.provider_event_id == "3816279340"

    def test_subscription_type_wins_over_event_type(self) -> None:
        [found] = extract([{"subscriptionType": "deal.creation", "eventType": "contact.deletion"}])
        assert (found.entity_type, found.action) == ("deal", "created")

    def test_generic_object_creation_takes_its_entity_from_object_type_id(self) -> None:
        [found] = PROVIDER.extract(hubspot_request(fixture("object.creation")))
        assert (found.entity_type, found.entity_id, found.action) == (
            "contact",
            "1246978",
            "created",
        )

    def test_generic_object_property_change_of_a_deal(self) -> None:
        [found] = PROVIDER.extract(hubspot_request(fixture("object.propertyChange")))
        assert (found.entity_type, found.entity_id, found.action) == (
            "deal",
            "1246965",
            "updated",
        )
        assert found.changes == {"dealstage": {"from": None, "to": "closedwon"}}


class TestObjectTypeIds:
    """Generic ``object.*`` events name their object in ``objectTypeId``."""

    @pytest.mark.parametrize(
        ("type_id", "entity"),
        [
            ("0-1", "contact"),
            ("0-2", "company"),
            ("0-3", "deal"),
            ("0-5", "ticket"),
            ("0-7", "product"),
            ("0-8", "line_item"),
            ("0-14", "quote"),
            ("0-27", "task"),
            ("0-46", "note"),
            ("0-47", "meeting"),
            ("0-48", "call"),
            ("0-49", "email"),
            ("0-53", "invoices"),  # the poller keeps names it does not map
            ("0-410", "0-410"),  # addressed by id only in the CRM API
            ("2-143967026", "2-143967026"),  # a custom object
        ],
    )
    def test_the_entity_of_an_object_type_id(self, type_id: str, entity: str) -> None:
        [found] = extract(
            [{"subscriptionType": "object.creation", "objectTypeId": type_id, "objectId": 7}]
        )
        assert (found.entity_type, found.action) == (entity, "created")

    @pytest.mark.parametrize(
        ("type_id", "object_name"),
        [*OBJECT_NAMES.items(), ("2-143967026", "2-143967026"), ("0-410", "0-410")],
    )
    def test_webhook_and_poller_give_one_record_one_entity(
        self, type_id: str, object_name: str
    ) -> None:
        [found] = extract([{"subscriptionType": "object.propertyChange", "objectTypeId": type_id}])
        poller = HubSpotSearch("https://api.hubapi.com", object_name, 100, (), 10_000)
        assert found.entity_type == poller.entity_type

    def test_the_object_type_field_still_wins(self) -> None:
        [found] = extract([{"objectType": "deal", "objectTypeId": "0-1"}])
        assert found.entity_type == "deal"

    def test_an_association_change_without_object_type_id_stays_object(self) -> None:
        """HubSpot sends ``objectTypeId`` on creation, deletion, merge, restore and property
        change events only."""
        [found] = extract([{"subscriptionType": "object.associationChange", "objectId": 1}])
        assert found.entity_type == "object"


class TestEventIds:
    """HubSpot: eventId "is not guaranteed to be unique": the CloudEvent id must be."""

    def envelopes(self, elements: list[dict[str, Any]]) -> list[tuple[Any, str]]:
        return [
            envelope_for(found, "hubspot", "", "req-1", VECTOR_NS, "ensemble.tap", False)
            for found in extract(elements)
        ]

    def test_two_events_sharing_an_event_id_get_two_cloudevent_ids(self) -> None:
        [(a, a_dedup), (b, b_dedup)] = self.envelopes(
            [contact_creation(1001, 501), contact_creation(2002, 902)]
        )
        assert (a.event_id, b.event_id) == (
            "777001:1001:4001:1709562120000",
            "777001:2002:4001:1709562120000",
        )
        assert a_dedup != b_dedup
        for envelope in (a, b):
            body = orjson.loads(envelope.body)
            assert body["id"] == envelope.event_id
            assert body["data"]["provider_event_id"] == "777001"

    def test_a_redelivery_keeps_its_cloudevent_id(self) -> None:
        [(first, first_dedup)] = self.envelopes([contact_creation(1001, 501)])
        [(again, again_dedup)] = self.envelopes([contact_creation(1001, 501, attempt=3)])
        assert (again.event_id, again_dedup) == (first.event_id, first_dedup)

    def test_without_an_event_id_the_cloudevent_id_is_generated(self) -> None:
        [found] = extract([{"subscriptionType": "contact.creation", "objectId": 1}])
        assert found.event_id == ""


def test_hubspot_has_its_dedicated_provider() -> None:
    assert isinstance(webhook_provider("hubspot"), HubSpotProvider)
