"""Generic HMAC webhooks: every configured name without a dedicated module
(docs/compatibility.md)."""

from __future__ import annotations

import pytest

from ensemble_tap.events import MAX_EVENT_TYPE_LENGTH, MAX_NAME_LENGTH, parse_rfc3339_ns
from ensemble_tap.providers import webhook_provider
from ensemble_tap.providers.base import BadPayload, SecretNotConfigured, VerificationFailed
from ensemble_tap.providers.generic import GenericProvider
from tests.unit.webhooks import hmac_hex, make_request, settings, sha256_hex

PROVIDER = GenericProvider()

# The reference's published test vectors: "Generic (server test)" and "Generic, tenant secret".
SERVER_SECRET = "super-secret"
SERVER_BODY = b'{"id":"invoice_42","timestamp":"2026-03-03T14:22:00Z","amount":1200}'
SERVER_SIGNATURE = "sha256=040f9e6c39e42253d99971291891fcd7bf20ae35dcb476ce1fe50b3ed782a769"
TENANT_SECRET = "tenant-secret"
TENANT_BODY = b'{"id":"tenant_evt_1","timestamp":"2026-03-03T14:22:00Z"}'
TENANT_SIGNATURE = "sha256=0ad61321bd7449255e6580e8be2a07052d1dac9de0ec09aaa583a2098e7eed30"

T_2026 = parse_rfc3339_ns("2026-03-03T14:22:00Z")


def signed(body: bytes, secret: str = SERVER_SECRET, **headers: str) -> dict[str, str]:
    return {"x-signature": "sha256=" + hmac_hex(secret, body), **headers}


class TestVerify:
    def test_the_server_test_vector_verifies(self) -> None:
        request = make_request(SERVER_BODY, {"X-Signature": SERVER_SIGNATURE})
        PROVIDER.verify(request, settings(secret=SERVER_SECRET), "acme")

    def test_the_tenant_secret_vector_verifies(self) -> None:
        request = make_request(TENANT_BODY, {"X-Signature": TENANT_SIGNATURE})
        PROVIDER.verify(request, settings(secret=TENANT_SECRET), "acme")

    def test_bare_hex_without_the_prefix_verifies(self) -> None:
        request = make_request(
            SERVER_BODY, {"X-Signature": SERVER_SIGNATURE.removeprefix("sha256=")}
        )
        PROVIDER.verify(request, settings(secret=SERVER_SECRET), "acme")

    def test_spec_negative_sha256_deadbeef(self) -> None:
        request = make_request(SERVER_BODY, {"X-Signature": "sha256=deadbeef"})
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            PROVIDER.verify(request, settings(secret=SERVER_SECRET), "acme")

    def test_the_prefix_is_case_sensitive(self) -> None:
        upper = "SHA256=" + SERVER_SIGNATURE.removeprefix("sha256=")
        with pytest.raises(VerificationFailed, match="decode signature"):
            PROVIDER.verify(
                make_request(SERVER_BODY, {"X-Signature": upper}),
                settings(secret=SERVER_SECRET),
                "acme",
            )

    def test_a_missing_signature_header_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match='missing signature header "X-Signature"'):
            PROVIDER.verify(make_request(SERVER_BODY), settings(secret=SERVER_SECRET), "acme")

    def test_a_wrong_secret_is_rejected(self) -> None:
        request = make_request(SERVER_BODY, {"X-Signature": SERVER_SIGNATURE})
        with pytest.raises(VerificationFailed):
            PROVIDER.verify(request, settings(secret=TENANT_SECRET), "acme")

    def test_a_tampered_body_is_rejected(self) -> None:
        request = make_request(SERVER_BODY + b" ", {"X-Signature": SERVER_SIGNATURE})
        with pytest.raises(VerificationFailed):
            PROVIDER.verify(request, settings(secret=SERVER_SECRET), "acme")

    def test_the_new_secret_of_a_rotation_verifies(self) -> None:
        request = make_request(SERVER_BODY, {"X-Signature": SERVER_SIGNATURE})
        PROVIDER.verify(request, settings(secret=["old-secret", SERVER_SECRET]), "acme")

    def test_the_old_secret_of_a_rotation_still_verifies(self) -> None:
        request = make_request(TENANT_BODY, {"X-Signature": TENANT_SIGNATURE})
        PROVIDER.verify(request, settings(secret=[TENANT_SECRET, "next-secret"]), "acme")

    def test_a_signature_from_a_secret_outside_the_rotation_list_is_rejected(self) -> None:
        request = make_request(SERVER_BODY, {"X-Signature": SERVER_SIGNATURE})
        with pytest.raises(VerificationFailed):
            PROVIDER.verify(request, settings(secret=["a", "b"]), "acme")

    def test_no_secret_is_a_configuration_error(self) -> None:
        request = make_request(SERVER_BODY, {"X-Signature": SERVER_SIGNATURE})
        with pytest.raises(SecretNotConfigured, match="provider acme secret is empty"):
            PROVIDER.verify(request, settings(), "acme")

    def test_a_whitespace_only_secret_counts_as_none(self) -> None:
        with pytest.raises(SecretNotConfigured):
            PROVIDER.verify(make_request(SERVER_BODY), settings(secret="   "), "acme")


class TestExtract:
    def test_the_server_test_event(self) -> None:
        request = make_request(
            SERVER_BODY, {"X-Event-Type": "invoice.paid", "X-Event-Id": "evt_123"}
        )
        [found] = PROVIDER.extract(request)
        assert (found.entity_type, found.entity_id, found.action) == (
            "invoice",
            "invoice_42",
            "paid",
        )
        assert found.provider_event_id == "evt_123"
        assert found.dedup_key == "evt_123"
        assert found.provider_time_ns == T_2026
        assert found.snapshot == {
            "id": "invoice_42",
            "timestamp": "2026-03-03T14:22:00Z",
            "amount": 1200,
        }
        assert found.changes is None
        assert found.payload_digest == ""  # the delivery id is the dedup key: no hash needed

    def test_the_go_normalizer_expectation_for_deal_updated(self) -> None:
        body = b'{"id":"deal_123","timestamp":"2026-03-03T14:22:00Z","amount":85}'
        [found] = PROVIDER.extract(make_request(body, {"X-Event-Type": "deal.updated"}))
        assert (found.entity_type, found.entity_id, found.action) == ("deal", "deal_123", "updated")
        assert found.provider_time_ns == T_2026

    def test_underscore_is_part_of_the_entity(self) -> None:
        [found] = PROVIDER.extract(
            make_request(b'{"id":"ii_1"}', {"X-Event-Type": "invoice_item.created"})
        )
        assert (found.entity_type, found.action) == ("invoice_item", "created")

    def test_the_action_header_overrides_and_is_lower_cased(self) -> None:
        request = make_request(
            b'{"id":"c_1"}', {"X-Event-Type": "contact.updated", "X-Event-Action": " DELETED "}
        )
        [found] = PROVIDER.extract(request)
        assert (found.entity_type, found.action) == ("contact", "deleted")

    def test_without_an_event_type_the_event_is_event_updated(self) -> None:
        [found] = PROVIDER.extract(make_request(b"{}"))
        assert (found.entity_type, found.entity_id, found.action) == ("event", "unknown", "updated")

    def test_without_an_event_id_the_dedup_key_is_left_to_the_payload_digest(self) -> None:
        [found] = PROVIDER.extract(make_request(b'{"id":"42"}', {"X-Event-Type": "deal.updated"}))
        assert found.dedup_key == ""
        assert found.provider_event_id == ""
        assert found.payload_digest == sha256_hex(b'{"id":"42"}')

    def test_a_body_without_an_rfc3339_time_has_no_provider_time(self) -> None:
        [found] = PROVIDER.extract(make_request(b'{"id":"1","created":1772547720}'))
        assert found.provider_time_ns is None

    def test_an_18_digit_numeric_id_is_exact(self) -> None:
        [found] = PROVIDER.extract(make_request(b'{"id": 820982911946154508}'))
        assert found.entity_id == "820982911946154508"

    def test_a_25_digit_numeric_id_keeps_every_digit(self) -> None:
        [found] = PROVIDER.extract(make_request(b'{"id": 1234567890123456789012345}'))
        assert found.entity_id == "1234567890123456789012345"

    def test_invalid_utf8_in_a_string_is_replaced_not_rejected(self) -> None:
        [found] = PROVIDER.extract(make_request(b'{"id":"x","name":"M\xfcller"}'))
        assert found.snapshot == {"id": "x", "name": "M\ufffdller"}

    @pytest.mark.parametrize(
        "body",
        [b"[]", b'[{"id":1}]', b'"text"', b"42", b"null", b"", b"not json", b"{"],
        ids=["empty-array", "array", "string", "number", "null", "empty", "text", "truncated"],
    )
    def test_a_body_that_is_not_a_json_object_is_a_bad_payload(self, body: bytes) -> None:
        with pytest.raises(BadPayload) as info:
            PROVIDER.extract(make_request(body, {"X-Event-Type": "invoice.paid"}))
        assert info.value.status == 400

    def test_event_type_and_action_headers_up_to_their_bounds_are_read(self) -> None:
        event_type = "e" * (MAX_EVENT_TYPE_LENGTH - 2) + ".x"
        request = make_request(
            b"{}", {"X-Event-Type": event_type, "X-Event-Action": "a" * MAX_NAME_LENGTH}
        )
        [found] = PROVIDER.extract(request)
        assert (found.entity_type, found.action) == (event_type[:-2], "a" * MAX_NAME_LENGTH)

    @pytest.mark.parametrize(
        ("header", "limit"),
        [("X-Event-Type", MAX_EVENT_TYPE_LENGTH), ("X-Event-Action", MAX_NAME_LENGTH)],
    )
    def test_longer_event_type_or_action_headers_are_bad_payloads(
        self, header: str, limit: int
    ) -> None:
        request = make_request(b"{}", {header: "x" * (limit + 1)})
        with pytest.raises(BadPayload, match=f"{header} is longer than {limit} characters"):
            PROVIDER.extract(request)


def test_names_without_a_dedicated_module_use_the_generic_provider() -> None:
    assert isinstance(webhook_provider("acme"), GenericProvider)
    assert isinstance(webhook_provider("zendesk"), GenericProvider)
    assert not isinstance(webhook_provider("stripe"), GenericProvider)
