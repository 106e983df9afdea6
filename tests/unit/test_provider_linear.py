"""Linear webhooks (docs/compatibility.md: the reference's behaviour and this project's fixes).

Fixed behaviours: a numeric ``webhookTimestamp`` is epoch milliseconds (>= 1e12) or seconds and
must be within ±60 s; the action comes from the body ``action`` (create → created, update →
updated, remove → deleted); the entity is the lower-cased body ``type``; the ``Linear-Event``
header is not required. The event's time is the body ``createdAt`` (when the action took
place), not ``webhookTimestamp`` (when this attempt was sent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers import webhook_provider
from ensemble_tap.providers.base import (
    BadPayload,
    Extraction,
    SecretNotConfigured,
    VerificationFailed,
)
from ensemble_tap.providers.linear import LinearProvider
from tests.unit.webhooks import NS, VECTOR_NS, hmac_hex, make_request, settings, sha256_hex

PROVIDER = LinearProvider()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "linear"
# The documented example delivery id (tests/fixtures/linear/README.md).
DOCUMENTED_DELIVERY = "234d1a4e-b617-4388-90fe-adc3633d6b72"
# webhookTimestamp of the documented example: 2023-02-10T19:22:20.508Z.
DOCUMENTED_SENT_NS = 1676056940508 * 1_000_000

# The reference's published test vectors: "Linear (clock frozen near timestamp)".
SECRET = "linear-secret"
BODY = b'{"type":"Issue","data":{"id":"ISS-123"},"webhookTimestamp":"2024-03-04T14:22:00Z"}'
SIGNATURE = "b1b8de8052c87c1084af58427460633473bd22be76ee23c8677159fe1a23e87a"
SETTINGS = settings(secret=SECRET)


def verify(body: bytes = BODY, signature: str | None = None, received_ns: int = VECTOR_NS) -> None:
    """Verify ``body``; it is signed correctly with SECRET unless ``signature`` is given."""
    value = hmac_hex(SECRET, body) if signature is None else signature
    request = make_request(body, {"Linear-Signature": value}, received_ns=received_ns)
    PROVIDER.verify(request, SETTINGS, "linear")


def body_with(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def extract_one(body: bytes, **headers: str) -> Extraction:
    [found] = PROVIDER.extract(make_request(body, headers))
    return found


class TestVerify:
    def test_the_spec_vector_verifies(self) -> None:
        verify(signature=SIGNATURE)

    def test_upper_case_hex_verifies(self) -> None:
        verify(signature=SIGNATURE.upper())

    def test_spec_negative_a_string_timestamp_two_minutes_old(self) -> None:
        with pytest.raises(VerificationFailed, match="outside replay window"):
            verify(signature=SIGNATURE, received_ns=VECTOR_NS + 120 * NS)

    def test_a_string_timestamp_two_minutes_in_the_future_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="outside replay window"):
            verify(signature=SIGNATURE, received_ns=VECTOR_NS - 120 * NS)

    @pytest.mark.parametrize("offset_seconds", [-60, -1, 0, 1, 60])
    def test_milliseconds_within_60_seconds_are_accepted(self, offset_seconds: int) -> None:
        body = body_with(type="Issue", webhookTimestamp=1709562120000 + offset_seconds * 1000)
        verify(body)

    @pytest.mark.parametrize("offset_seconds", [-61, 61, -3600])
    def test_milliseconds_beyond_60_seconds_are_rejected(self, offset_seconds: int) -> None:
        body = body_with(type="Issue", webhookTimestamp=1709562120000 + offset_seconds * 1000)
        with pytest.raises(VerificationFailed, match="outside replay window"):
            verify(body)

    def test_a_real_linear_millisecond_timestamp_is_not_read_as_seconds(self) -> None:
        """The reference read 1709562120000 as seconds (year 56 000) and rejected every event."""
        verify(body_with(type="Issue", action="create", webhookTimestamp=1709562120000))

    def test_seconds_are_accepted_too(self) -> None:
        verify(body_with(type="Issue", webhookTimestamp=1709562120))
        with pytest.raises(VerificationFailed, match="outside replay window"):
            verify(body_with(type="Issue", webhookTimestamp=1709562120 - 61))

    def test_a_millisecond_string_is_accepted(self) -> None:
        verify(body_with(type="Issue", webhookTimestamp="1709562120000"))

    def test_a_body_without_a_timestamp_is_accepted(self) -> None:
        verify(body_with(type="Issue", data={"id": "x"}))

    @pytest.mark.parametrize("timestamp", ["yesterday", True, {"ms": 1}, -5, ""])
    def test_an_unusable_timestamp_is_rejected(self, timestamp: Any) -> None:
        """Stricter than the reference, which skipped the replay check for these."""
        with pytest.raises(VerificationFailed, match="webhookTimestamp is not a valid time"):
            verify(body_with(type="Issue", webhookTimestamp=timestamp))

    def test_the_signature_is_checked_before_the_timestamp(self) -> None:
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            verify(signature="00" * 32, received_ns=VECTOR_NS + 3600 * NS)

    def test_a_signed_body_that_is_not_an_object_is_a_bad_payload(self) -> None:
        with pytest.raises(BadPayload):
            verify(b"[1,2]")

    def test_a_missing_signature_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match='missing signature header "Linear-Signature"'):
            PROVIDER.verify(make_request(BODY), SETTINGS, "linear")

    def test_a_wrong_secret_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            verify(signature=hmac_hex("other", BODY))

    def test_a_prefixed_signature_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="decode signature"):
            verify(signature="sha256=" + SIGNATURE)

    def test_the_second_secret_of_a_rotation_list_verifies(self) -> None:
        request = make_request(BODY, {"Linear-Signature": SIGNATURE})
        PROVIDER.verify(request, settings(secret=["previous", SECRET]), "linear")

    def test_no_secret_is_a_configuration_error(self) -> None:
        request = make_request(BODY, {"Linear-Signature": SIGNATURE})
        with pytest.raises(SecretNotConfigured):
            PROVIDER.verify(request, settings(), "linear")


class TestExtract:
    def test_the_spec_vector_body(self) -> None:
        found = extract_one(BODY, **{"Linear-Delivery": "d-1"})
        assert (found.entity_type, found.entity_id, found.action) == ("issue", "ISS-123", "updated")
        assert found.provider_event_id == "d-1"
        assert found.dedup_key == "d-1"
        assert found.provider_time_ns == VECTOR_NS
        assert found.snapshot == json.loads(BODY)
        assert found.payload_digest == sha256_hex(BODY)

    def test_the_go_normalizer_expectation(self) -> None:
        body = b'{"type":"Issue","data":{"id":"ISS-1"},"webhookTimestamp":"2026-03-03T14:22:00Z"}'
        found = extract_one(body, **{"Linear-Event": "issue.updated"})
        assert (found.entity_type, found.action, found.entity_id) == ("issue", "updated", "ISS-1")
        assert found.provider_time_ns == parse_rfc3339_ns("2026-03-03T14:22:00Z")

    @pytest.mark.parametrize(
        ("action", "expected"),
        [
            ("create", "created"),
            ("update", "updated"),
            ("remove", "deleted"),
            ("CREATE", "created"),
            (" remove ", "deleted"),
            ("archive", "archive"),
        ],
    )
    def test_the_action_comes_from_the_body(self, action: str, expected: str) -> None:
        assert extract_one(body_with(type="Issue", action=action)).action == expected

    def test_what_linear_really_sends(self) -> None:
        """``Linear-Event: Issue`` plus body action ``create`` is an issue creation."""
        body = body_with(
            action="create",
            type="Issue",
            data={"id": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9", "title": "Bug"},
            webhookTimestamp=1709562120000,
        )
        found = extract_one(body, **{"Linear-Event": "Issue"})
        assert (found.entity_type, found.action) == ("issue", "created")
        assert found.entity_id == "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9"
        assert found.provider_time_ns == VECTOR_NS

    def test_the_body_action_wins_over_the_event_header(self) -> None:
        found = extract_one(
            body_with(type="Issue", action="remove"), **{"Linear-Event": "Issue.create"}
        )
        assert found.action == "deleted"

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("Issue.create", "created"),
            ("issue.updated", "updated"),
            ("Issue", "updated"),
            ("", "updated"),
        ],
    )
    def test_without_a_body_action_the_event_header_or_updated_is_used(
        self, header: str, expected: str
    ) -> None:
        assert extract_one(body_with(type="Issue"), **{"Linear-Event": header}).action == expected

    def test_the_event_header_is_not_required(self) -> None:
        found = extract_one(body_with(type="Comment", action="create", data={"id": "c"}))
        assert (found.entity_type, found.action, found.entity_id) == ("comment", "created", "c")

    @pytest.mark.parametrize(
        ("type_", "entity"),
        [
            ("IssueLabel", "issuelabel"),
            ("  Project ", "project"),
            ("", "event"),
            (None, "event"),
            (3, "3"),
        ],
    )
    def test_the_entity_is_the_lower_cased_body_type(self, type_: Any, entity: str) -> None:
        assert extract_one(body_with(type=type_)).entity_type == entity

    @pytest.mark.parametrize(
        ("body", "entity_id"),
        [
            ({"data": {"id": "d"}, "id": "top"}, "d"),
            ({"data": {"title": "no id"}, "id": "top"}, "top"),
            ({"data": "not an object", "uuid": "u"}, "u"),
            ({"data": {"data": {"id": "inner"}}}, "inner"),
            ({}, "unknown"),
        ],
    )
    def test_the_entity_id_is_data_then_top_level(
        self, body: dict[str, Any], entity_id: str
    ) -> None:
        assert extract_one(json.dumps(body).encode()).entity_id == entity_id

    def test_a_long_numeric_id_is_exact(self) -> None:
        assert extract_one(b'{"data":{"id":820982911946154508}}').entity_id == "820982911946154508"

    def test_no_delivery_header_leaves_dedup_to_the_digest(self) -> None:
        found = extract_one(body_with(type="Issue"))
        assert found.dedup_key == ""
        assert found.provider_event_id == ""

    def test_no_timestamp_means_no_provider_time(self) -> None:
        assert extract_one(body_with(type="Issue")).provider_time_ns is None

    def test_an_unusable_timestamp_is_a_bad_payload_in_extract(self) -> None:
        """extract raises only BadPayload (a stored delivery may be extracted again later)."""
        with pytest.raises(BadPayload, match="webhookTimestamp"):
            extract_one(body_with(type="Issue", webhookTimestamp="soon"))

    @pytest.mark.parametrize("body", [b"[]", b'"x"', b"not json", b""])
    def test_a_body_that_is_not_an_object_is_a_bad_payload(self, body: bytes) -> None:
        with pytest.raises(BadPayload):
            extract_one(body)


class TestDocumentedPayloads:
    @pytest.mark.parametrize(
        ("name", "entity_type", "entity_id", "action", "created_at"),
        [
            (
                "comment-create",
                "comment",
                "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9",
                "created",
                "2020-01-23T12:53:18.084Z",
            ),
            (
                "issue-create",
                "issue",
                "539068e2-ae88-4d09-bd75-22eb4a59612f",
                "created",
                "2020-01-23T12:40:02.511Z",
            ),
            (
                "issue-update",
                "issue",
                "539068e2-ae88-4d09-bd75-22eb4a59612f",
                "updated",
                "2020-01-23T12:53:18.084Z",
            ),
            (
                "issue-remove",
                "issue",
                "539068e2-ae88-4d09-bd75-22eb4a59612f",
                "deleted",
                "2020-01-23T13:05:41.300Z",
            ),
        ],
    )
    def test_each_documented_delivery(
        self, name: str, entity_type: str, entity_id: str, action: str, created_at: str
    ) -> None:
        body = (FIXTURES / f"{name}.json").read_bytes()
        verify(body, received_ns=DOCUMENTED_SENT_NS + 2 * NS)
        payload = json.loads(body)
        headers = {"Linear-Delivery": DOCUMENTED_DELIVERY, "Linear-Event": payload["type"]}
        found = extract_one(body, **headers)
        assert (found.entity_type, found.entity_id, found.action) == (
            entity_type,
            entity_id,
            action,
        )
        assert found.provider_time_ns == parse_rfc3339_ns(created_at)
        assert found.provider_event_id == found.dedup_key == DOCUMENTED_DELIVERY
        assert found.snapshot == payload

    def test_a_retry_keeps_the_time_of_the_action(self) -> None:
        """Linear retries after 1 minute, 1 hour and 6 hours with a fresh webhookTimestamp
        (it must pass the 60-second window): the event's time must not follow it."""
        first = json.loads((FIXTURES / "issue-update.json").read_bytes())
        retry = {**first, "webhookTimestamp": first["webhookTimestamp"] + 3_600_000}
        times = {extract_one(json.dumps(body).encode()).provider_time_ns for body in (first, retry)}
        assert times == {parse_rfc3339_ns("2020-01-23T12:53:18.084Z")}

    @pytest.mark.parametrize("created_at", ["", "yesterday", 1579783998084, None])
    def test_without_a_usable_created_at_the_webhook_timestamp_is_the_time(
        self, created_at: object
    ) -> None:
        body = body_with(type="Issue", createdAt=created_at, webhookTimestamp=1709562120000)
        assert extract_one(body).provider_time_ns == VECTOR_NS


def test_linear_has_its_dedicated_provider() -> None:
    assert isinstance(webhook_provider("linear"), LinearProvider)
