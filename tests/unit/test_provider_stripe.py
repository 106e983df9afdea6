"""Stripe webhooks: ``Stripe-Signature: t=…,v1=…`` (docs/compatibility.md: the reference's
behaviour and this project's fixes).

Fixed behaviours: no API-version pin, future timestamps beyond the tolerance are rejected, and
``customer.subscription.updated`` keeps its middle segment. Thin events (event destinations,
``"object": "v2.core.event"``) keep their entity id (``related_object.id``) and their RFC 3339
``created``.
"""

from __future__ import annotations

import calendar
import json
from pathlib import Path

import pytest

from ensemble_tap.providers import webhook_provider
from ensemble_tap.providers.base import BadPayload, SecretNotConfigured, VerificationFailed
from ensemble_tap.providers.stripe import StripeProvider, parse_signature_header, split_type
from tests.unit.webhooks import NS, VECTOR_NS, VECTOR_TIME, hmac_hex, make_request, settings

PROVIDER = StripeProvider()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"

# The reference's published test vectors: "Stripe (clock frozen near t)".
SECRET = "whsec_test"
BODY = (
    b'{"id":"evt_123","object":"event","api_version":"2025-08-27.basil","type":"invoice.paid",'
    b'"created":1709562120,"data":{"object":{"id":"in_123","object":"invoice"}}}'
)
HEADER = "t=1709562120,v1=d9a51eaeb6574afcd86f5a661425b767229489d51afa48561cd78a755ca11b86"
SETTINGS = settings(secret=SECRET)


def sign(body: bytes, t: int | str = VECTOR_TIME, secret: str = SECRET) -> str:
    """A Stripe-Signature header; the MAC covers the canonical decimal of ``t``."""
    return f"t={t},v1=" + hmac_hex(secret, f"{int(t)}.".encode() + body)


def verify(header: str | None, body: bytes = BODY, received_ns: int = VECTOR_NS) -> None:
    headers = {} if header is None else {"Stripe-Signature": header}
    PROVIDER.verify(make_request(body, headers, received_ns=received_ns), SETTINGS, "stripe")


def event_body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def documented(name: str) -> bytes:
    """A body Stripe's documentation shows (tests/fixtures/stripe/README.md names the page)."""
    return (FIXTURES / f"{name}.json").read_bytes()


def utc_ns(year: int, month: int, day: int, hour: int, minute: int, second: int, ms: int) -> int:
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * NS + ms * 10**6


class TestVerify:
    def test_the_spec_vector_verifies(self) -> None:
        verify(HEADER)

    def test_the_spec_vector_verifies_a_few_seconds_later(self) -> None:
        verify(HEADER, received_ns=VECTOR_NS + 42 * NS)

    def test_spec_negative_t_1_v1_deadbeef(self) -> None:
        with pytest.raises(VerificationFailed):
            verify("t=1,v1=deadbeef")

    def test_a_deadbeef_signature_with_a_current_timestamp_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="no valid signature"):
            verify(f"t={VECTOR_TIME},v1=deadbeef")

    @pytest.mark.parametrize("header", [None, "", "  "])
    def test_a_missing_header_is_rejected(self, header: str | None) -> None:
        with pytest.raises(VerificationFailed, match="no Stripe-Signature header"):
            verify(header)

    def test_a_wrong_secret_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="no valid signature"):
            verify(sign(BODY, secret="whsec_other"))

    def test_a_tampered_body_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="no valid signature"):
            verify(HEADER, body=BODY.replace(b"in_123", b"in_124"))

    def test_the_second_configured_secret_verifies(self) -> None:
        request = make_request(BODY, {"Stripe-Signature": HEADER})
        PROVIDER.verify(request, settings(secret=["whsec_old", SECRET]), "stripe")

    def test_any_one_of_several_v1_signatures_is_enough(self) -> None:
        """Stripe sends one v1 per active secret while a secret is being rolled."""
        other = hmac_hex("whsec_other", f"{VECTOR_TIME}.".encode() + BODY)
        verify(f"{HEADER},v1={other}")
        verify(f"t={VECTOR_TIME},v1={other},{HEADER.split(',')[1]}")

    def test_invalid_hex_in_one_v1_is_skipped(self) -> None:
        verify(f"t={VECTOR_TIME},v1=zz,{HEADER.split(',')[1]}")

    def test_only_invalid_v1_values_is_no_valid_signature(self) -> None:
        with pytest.raises(VerificationFailed, match="no valid signature"):
            verify(f"t={VECTOR_TIME},v1=zz,v1=abc")

    def test_v0_and_other_schemes_are_ignored(self) -> None:
        v1 = HEADER.split(",")[1]
        verify(f"t={VECTOR_TIME},v0=00ff,{v1},scheme=x")
        with pytest.raises(VerificationFailed, match="no valid signature"):
            verify(f"t={VECTOR_TIME},v0={v1.removeprefix('v1=')}")

    def test_a_space_after_a_comma_makes_an_ignored_key(self) -> None:
        with pytest.raises(VerificationFailed, match="no valid signature"):
            verify(f"t={VECTOR_TIME}, {HEADER.split(',')[1]}")

    @pytest.mark.parametrize(
        "header",
        [f"t={VECTOR_TIME},v1", "t==1", "t=1,v1=ab=cd", "garbage", "t=1,,v1=00"],
        ids=["no-equals", "double-equals", "equals-in-value", "garbage", "empty-piece"],
    )
    def test_a_piece_that_is_not_key_equals_value_is_an_invalid_header(self, header: str) -> None:
        with pytest.raises(VerificationFailed, match="invalid Stripe-Signature header"):
            verify(header)

    @pytest.mark.parametrize("t", ["abc", "1.5", "", "0x10", "1" * 19])
    def test_a_t_that_is_not_a_decimal_integer_is_an_invalid_header(self, t: str) -> None:
        with pytest.raises(VerificationFailed, match="invalid Stripe-Signature header"):
            verify(f"t={t},{HEADER.split(',')[1]}")

    def test_a_missing_t_is_outside_the_tolerance(self) -> None:
        with pytest.raises(VerificationFailed, match="within tolerance"):
            verify(HEADER.split(",")[1])

    def test_t_signs_as_its_canonical_decimal(self) -> None:
        """``t=+0012`` is the number 12 and the MAC covers ``12.``, as in stripe-go."""
        body = b'{"id":"evt_1"}'
        header = "t=+0012,v1=" + hmac_hex(SECRET, b"12." + body)
        verify(header, body=body, received_ns=12 * NS)

    def test_exactly_300_seconds_old_is_accepted(self) -> None:
        verify(HEADER, received_ns=VECTOR_NS + 300 * NS)

    def test_more_than_300_seconds_old_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="within tolerance"):
            verify(HEADER, received_ns=VECTOR_NS + 301 * NS)

    def test_exactly_300_seconds_in_the_future_is_accepted(self) -> None:
        verify(HEADER, received_ns=VECTOR_NS - 300 * NS)

    def test_more_than_300_seconds_in_the_future_is_rejected(self) -> None:
        """The reference accepts any future t; we do not."""
        with pytest.raises(VerificationFailed, match="within tolerance"):
            verify(HEADER, received_ns=VECTOR_NS - 301 * NS)

    def test_the_tolerance_is_checked_before_the_signature(self) -> None:
        with pytest.raises(VerificationFailed, match="within tolerance"):
            verify("t=1,v1=00ff")

    @pytest.mark.parametrize("api_version", ["2024-12-18.acacia", "2025-09-30.clover", None])
    def test_any_api_version_verifies(self, api_version: str | None) -> None:
        """No API-version pin: a valid signature is enough (the smoke test sends acacia)."""
        body = event_body(id="evt_9", type="invoice.paid", api_version=api_version, created=1)
        verify(sign(body), body=body)
        [found] = PROVIDER.extract(make_request(body))
        assert found.provider_event_id == "evt_9"

    def test_no_secret_is_a_configuration_error(self) -> None:
        request = make_request(BODY, {"Stripe-Signature": HEADER})
        with pytest.raises(SecretNotConfigured, match="provider stripe secret is empty"):
            PROVIDER.verify(request, settings(), "stripe")


class TestParseSignatureHeader:
    def test_returns_the_timestamp_and_every_valid_signature(self) -> None:
        t, signatures = parse_signature_header("t=-5,v1=00ff,v1=zz,v1=0a0b")
        assert t == -5
        assert signatures == [b"\x00\xff", b"\x0a\x0b"]


class TestExtract:
    def test_the_spec_vector_event(self) -> None:
        [found] = PROVIDER.extract(make_request(BODY, {"Stripe-Signature": HEADER}))
        assert (found.entity_type, found.entity_id, found.action) == ("invoice", "in_123", "paid")
        assert found.provider_event_id == "evt_123"
        assert found.dedup_key == "evt_123"
        assert found.provider_time_ns == VECTOR_NS
        assert found.snapshot == {"id": "in_123", "object": "invoice"}

    def test_a_multi_segment_type_keeps_its_middle(self) -> None:
        body = event_body(
            id="evt_2", type="customer.subscription.updated", data={"object": {"id": "sub_1"}}
        )
        [found] = PROVIDER.extract(make_request(body))
        assert (found.entity_type, found.entity_id, found.action) == (
            "customer.subscription",
            "sub_1",
            "updated",
        )

    def test_an_event_without_data_has_an_unknown_entity(self) -> None:
        [found] = PROVIDER.extract(make_request(event_body(id="evt_3", type="invoice.paid")))
        assert found.entity_id == "unknown"
        assert found.snapshot is None

    def test_an_empty_data_object_gives_no_snapshot(self) -> None:
        body = event_body(id="evt_4", type="invoice.paid", data={"object": {}})
        [found] = PROVIDER.extract(make_request(body))
        assert found.snapshot is None
        assert found.entity_id == "unknown"

    def test_the_object_id_is_exact_for_long_integers(self) -> None:
        body = b'{"id":"evt_5","type":"x.y","data":{"object":{"id":1234567890123456789012345}}}'
        [found] = PROVIDER.extract(make_request(body))
        assert found.entity_id == "1234567890123456789012345"

    @pytest.mark.parametrize("created", [0, -5, "1709562120", 1709562120.0, True, None])
    def test_only_a_positive_integer_created_is_a_provider_time(self, created: object) -> None:
        [found] = PROVIDER.extract(make_request(event_body(id="e", type="a.b", created=created)))
        assert found.provider_time_ns is None

    @pytest.mark.parametrize(
        "body",
        [
            b'{"id":"e","type":"a.b","data":[]}',
            b'{"id":"e","type":"a.b","data":"x"}',
            b'{"id":"e","type":"a.b","data":{"object":[1]}}',
            b'{"id":"e","type":"a.b","data":{"object":"in_1"}}',
            b"[]",
            b"not json",
        ],
        ids=["data-array", "data-string", "object-array", "object-string", "array", "text"],
    )
    def test_malformed_events_are_bad_payloads(self, body: bytes) -> None:
        with pytest.raises(BadPayload):
            PROVIDER.extract(make_request(body))

    def test_a_missing_id_leaves_dedup_to_the_payload_digest(self) -> None:
        [found] = PROVIDER.extract(make_request(event_body(type="a.b")))
        assert found.dedup_key == ""
        assert found.provider_event_id == ""


class TestDocumentedPayloads:
    @pytest.mark.parametrize(
        ("name", "entity_type", "entity_id", "action", "time_ns"),
        [
            (
                "setup_intent.created",
                "setup_intent",
                "seti_1NG8Du2eZvKYlo2C9XMqbR0x",
                "created",
                1686089970 * NS,
            ),
            (
                "v1.billing.meter.error_report_triggered",
                "billing.meter",
                "mtr_test_61R9IeP0SgKbYROOx41PEAQhH0qO23oW",
                "error_report_triggered",
                utc_ns(2024, 9, 17, 6, 20, 52, 246),
            ),
            (
                "v2.core.event_destination.ping",
                "v2.core.event_destination",
                "ed_test_61RM8ltWcTW4mbsxf16RJyfa2xSQLHJJh1sxm7H0KVT6",
                "ping",
                utc_ns(2024, 10, 22, 16, 26, 54, 63),
            ),
            (
                "v2.billing.metered_item.created",
                "v2.billing.metered_item",
                "bli_61SJYFLbcODkA5Zd7rZ16RuKJoESSQUtPVJKIgeI4D2KpL",
                "created",
                utc_ns(2025, 1, 1, 0, 0, 0, 0),
            ),
        ],
    )
    def test_each_documented_event(
        self, name: str, entity_type: str, entity_id: str, action: str, time_ns: int
    ) -> None:
        body = documented(name)
        verify(sign(body), body=body)
        [found] = PROVIDER.extract(make_request(body))
        assert (found.entity_type, found.entity_id, found.action) == (
            entity_type,
            entity_id,
            action,
        )
        assert found.provider_time_ns == time_ns
        event = json.loads(body)
        assert found.provider_event_id == found.dedup_key == event["id"]

    def test_a_thin_event_is_its_own_snapshot(self) -> None:
        """No object travels in a thin event: the snapshot keeps what fetching it needs."""
        body = documented("v2.billing.metered_item.created")
        [found] = PROVIDER.extract(make_request(body))
        assert found.snapshot == json.loads(body)

    def test_a_snapshot_event_keeps_its_object_as_snapshot(self) -> None:
        body = documented("setup_intent.created")
        [found] = PROVIDER.extract(make_request(body))
        assert found.snapshot == json.loads(body)["data"]["object"]


class TestThinEvents:
    def test_without_related_object_the_type_names_the_entity(self) -> None:
        body = event_body(
            id="evt_1",
            object="v2.core.event",
            type="v1.billing.meter.no_meter_found",
            created="2024-09-17T06:20:52.246Z",
            related_object=None,
        )
        [found] = PROVIDER.extract(make_request(body))
        assert (found.entity_type, found.entity_id, found.action) == (
            "billing.meter",
            "unknown",
            "no_meter_found",
        )

    def test_a_bracketed_qualifier_is_not_a_segment(self) -> None:
        body = event_body(
            id="evt_2",
            object="v2.core.event",
            type="v2.core.account[configuration.merchant].capability_status_updated",
            created="2025-01-01T00:00:00.000Z",
            related_object={"id": "acct_1", "type": "v2.core.account"},
        )
        [found] = PROVIDER.extract(make_request(body))
        assert (found.entity_type, found.entity_id, found.action) == (
            "v2.core.account",
            "acct_1",
            "capability_status_updated",
        )

    @pytest.mark.parametrize("created", [1709562120, "1709562120", "2024-09-17 06:20:52Z", None])
    def test_only_an_rfc3339_created_is_a_provider_time(self, created: object) -> None:
        body = event_body(id="e", object="v2.core.event", type="v2.a.b.c", created=created)
        [found] = PROVIDER.extract(make_request(body))
        assert found.provider_time_ns is None

    @pytest.mark.parametrize("related", ["mtr_1", ["mtr_1"], 5])
    def test_a_related_object_that_is_not_an_object_is_a_bad_payload(self, related: object) -> None:
        body = event_body(id="e", object="v2.core.event", type="v1.a.b", related_object=related)
        with pytest.raises(BadPayload, match="related_object"):
            PROVIDER.extract(make_request(body))

    def test_data_of_a_thin_event_is_not_read_as_a_snapshot_event(self) -> None:
        """A thin event's ``data`` holds extra details, never ``data.object``."""
        body = event_body(
            id="e",
            object="v2.core.event",
            type="v1.billing.meter.error_report_triggered",
            data={"developer_message_summary": "There is 1 invalid event", "object": "x"},
            related_object={"id": "mtr_1", "type": "billing.meter"},
        )
        [found] = PROVIDER.extract(make_request(body))
        assert (found.entity_type, found.entity_id) == ("billing.meter", "mtr_1")


class TestSplitType:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("invoice.paid", ("invoice", "paid")),
            ("customer.subscription.updated", ("customer.subscription", "updated")),
            ("Invoice.Paid", ("invoice", "paid")),
            ("ping", ("ping", "updated")),
            ("", ("event", "updated")),
            (None, ("event", "updated")),
            (42, ("event", "updated")),
            ("a..b", ("a", "b")),
            ("a. .", ("a", "updated")),
        ],
    )
    def test_entity_is_every_segment_but_the_last(
        self, value: object, expected: tuple[str, str]
    ) -> None:
        assert split_type(value) == expected


def test_stripe_has_its_dedicated_provider() -> None:
    assert isinstance(webhook_provider("stripe"), StripeProvider)
