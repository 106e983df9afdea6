"""CloudEvent envelope, NATS subjects, type naming, times and dedup ids (docs/compatibility.md)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1.http import from_json as v1_from_json
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_tap.events import (
    MAX_ENTITY_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    NormalizedEvent,
    NormalizeError,
    bounded_id,
    build_envelope,
    dedup_id,
    event_type,
    fallback_dedup_key,
    format_time_ns,
    json_bytes,
    nats_subject,
    now_ns,
    parse_rfc3339_ns,
    subject_token,
)

NS = 1_000_000_000
T_2026 = 1_772_547_720 * NS  # 2026-03-03T14:22:00Z

# The reference's documented example: the generic server test's CloudEvent, byte for byte
# as the reference writes it.
SPEC_EVENT_JSON = (
    '{"specversion":"1.0","id":"evt_123","source":"tap/acme/tenant-42",'
    '"type":"ensemble.tap.acme.invoice.paid","subject":"invoice/invoice_42",'
    '"datacontenttype":"application/json","time":"2026-03-03T14:22:00Z",'
    '"data":{"provider":"acme","entity_type":"invoice","entity_id":"invoice_42","action":"paid",'
    '"snapshot":{"amount":1200,"id":"invoice_42","timestamp":"2026-03-03T14:22:00Z"},'
    '"provider_event_id":"evt_123","provider_timestamp":"2026-03-03T14:22:00Z",'
    '"tenant_id":"tenant-42","request_id":"req-ingress-1"},'
    '"taprequestid":"req-ingress-1","tapversion":"v1"}'
)


def spec_event(**overrides: Any) -> NormalizedEvent:
    """The normalized event of the reference's documented example (generic ``acme``, tenant
    ``tenant-42``)."""
    values: dict[str, Any] = {
        "provider": "acme",
        "entity_type": "invoice",
        "entity_id": "invoice_42",
        "action": "paid",
        "provider_time_ns": T_2026,
        "provider_event_id": "evt_123",
        "tenant_id": "tenant-42",
        "request_id": "req-ingress-1",
        "snapshot": {"id": "invoice_42", "timestamp": "2026-03-03T14:22:00Z", "amount": 1200},
    }
    values.update(overrides)
    return NormalizedEvent(**values)


def decoded(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


class TestSubjectToken:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("Stripe", "stripe"),
            ("invoice-item", "invoice_item"),
            ("pull.request", "pull_request"),
            ("a/b:c d", "a_b_c_d"),
            ("  padded  ", "padded"),
            ("*", "_"),
            (">", "_"),
            ("a\tb", "a_b"),
            ("café", "caf_"),
            ("Tenant A", "tenant_a"),
            ("", "unknown"),
            ("   ", "unknown"),
            ("already_ok_123", "already_ok_123"),
        ],
    )
    def test_tokens_hold_only_lower_case_letters_digits_and_underscores(
        self, value: str, expected: str
    ) -> None:
        assert subject_token(value) == expected

    @settings(max_examples=200, deadline=None)
    @given(st.text())
    def test_any_text_becomes_one_safe_token(self, value: str) -> None:
        assert re.fullmatch(r"[a-z0-9_]+", subject_token(value))


class TestNatsSubjectAndType:
    def test_spec_build_subject(self) -> None:
        assert (
            nats_subject("ensemble.tap", "Stripe", "invoice-item", "Paid")
            == "ensemble.tap.stripe.invoice_item.paid"
        )

    def test_spec_build_type(self) -> None:
        assert event_type("GitHub", "pull.request", "Merged") == (
            "ensemble.tap.github.pull_request.merged"
        )

    def test_spec_tenant_scoped_subject(self) -> None:
        assert (
            nats_subject("ensemble.tap", "stripe", "invoice", "paid", "tenant-42")
            == "ensemble.tap.tenant_42.stripe.invoice.paid"
        )

    def test_spec_custom_prefix_tenant_scoped_subject(self) -> None:
        assert (
            nats_subject("custom.tap", "acme", "deal", "updated", "tenant-a")
            == "custom.tap.tenant_a.acme.deal.updated"
        )

    @pytest.mark.parametrize("tenant", ["", "   "])
    def test_a_blank_tenant_gives_the_unscoped_form(self, tenant: str) -> None:
        assert nats_subject("ensemble.tap", "acme", "deal", "updated", tenant) == (
            "ensemble.tap.acme.deal.updated"
        )

    def test_input_can_add_neither_tokens_nor_wildcards(self) -> None:
        subject = nats_subject("ensemble.tap", "a.b.>", "*", "x y.z", "t.*")
        assert subject == "ensemble.tap.t__.a_b__._.x_y_z"
        assert len(subject.split(".")) == 6

    def test_the_type_prefix_is_fixed(self) -> None:
        assert event_type("acme", "invoice", "paid") == "ensemble.tap.acme.invoice.paid"


class TestFormatTime:
    @pytest.mark.parametrize(
        ("ns", "expected"),
        [
            (0, "1970-01-01T00:00:00Z"),
            (T_2026, "2026-03-03T14:22:00Z"),
            (T_2026 + 500_000_000, "2026-03-03T14:22:00.5Z"),
            (T_2026 + 123_456_789, "2026-03-03T14:22:00.123456789Z"),
            (T_2026 + 1_000, "2026-03-03T14:22:00.000001Z"),
            (T_2026 + 120_000_000, "2026-03-03T14:22:00.12Z"),
            (-1, "1969-12-31T23:59:59.999999999Z"),
        ],
    )
    def test_rfc3339_nano_in_utc_trims_trailing_zeros(self, ns: int, expected: str) -> None:
        assert format_time_ns(ns) == expected

    @pytest.mark.parametrize("ns", [0, T_2026, T_2026 + 1, -5 * NS + 7])
    def test_round_trips_through_parse(self, ns: int) -> None:
        assert parse_rfc3339_ns(format_time_ns(ns)) == ns


class TestParseRfc3339:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-03-03T14:22:00Z", T_2026),
            ("2026-03-03T16:22:00+02:00", T_2026),
            ("2026-03-03T08:52:00-05:30", T_2026),
            ("2026-03-03T14:22:00.5Z", T_2026 + 500_000_000),
            ("2026-03-03T14:22:00.123456789Z", T_2026 + 123_456_789),
            ("2026-03-03T14:22:00.1234567891Z", T_2026 + 123_456_789),
            ("1970-01-01T00:00:00Z", 0),
        ],
    )
    def test_parses_to_epoch_nanoseconds(self, text: str, expected: int) -> None:
        assert parse_rfc3339_ns(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "2026-03-03",
            "2026-03-03 14:22:00Z",
            "2026-03-03T14:22:00",
            "2026-03-03t14:22:00z",
            "2026-02-30T14:22:00Z",
            "2026-03-03T24:00:00Z",
            "2026-03-03T14:22:60Z",
            "2026-03-03T14:22Z",
            "2026-03-03T14:22:00.Z",
            "2026-03-03T14:22:00+0200",
            "2026-03-03T14:22:00Z\n",
            " 2026-03-03T14:22:00Z",
            "２０２６-03-03T14:22:00Z",
            "",
            "1772547720",
        ],
        ids=[
            "date-only",
            "space-separator",
            "missing-offset",
            "lower-case",
            "feb-30",
            "hour-24",
            "second-60",
            "no-seconds",
            "empty-fraction",
            "offset-without-colon",
            "trailing-newline",
            "leading-space",
            "fullwidth-digits",
            "empty",
            "epoch",
        ],
    )
    def test_rejects_what_go_rejects(self, text: str) -> None:
        assert parse_rfc3339_ns(text) is None


class TestBuildEnvelopeSpecExample:
    def test_attributes_and_data_equal_the_reference_event(self) -> None:
        envelope = build_envelope(spec_event(), "ensemble.tap", tenant_scoped=False)
        assert decoded(envelope.body) == json.loads(SPEC_EVENT_JSON)

    def test_attribute_order_follows_the_reference_wire_format(self) -> None:
        envelope = build_envelope(spec_event(), "ensemble.tap", tenant_scoped=False)
        assert list(decoded(envelope.body)) == list(json.loads(SPEC_EVENT_JSON))

    def test_data_field_order_follows_the_reference(self) -> None:
        envelope = build_envelope(spec_event(), "ensemble.tap", tenant_scoped=False)
        assert list(decoded(envelope.body)["data"]) == list(json.loads(SPEC_EVENT_JSON)["data"])

    def test_routing_fields(self) -> None:
        envelope = build_envelope(spec_event(), "ensemble.tap", tenant_scoped=False)
        assert envelope.event_id == "evt_123"
        assert envelope.type == "ensemble.tap.acme.invoice.paid"
        assert envelope.subject == "ensemble.tap.acme.invoice.paid"
        assert envelope.request_id == "req-ingress-1"
        assert (envelope.provider, envelope.entity_type, envelope.action) == (
            "acme",
            "invoice",
            "paid",
        )

    def test_tenant_scoped_subject(self) -> None:
        envelope = build_envelope(spec_event(), "ensemble.tap", tenant_scoped=True)
        assert envelope.subject == "ensemble.tap.tenant_42.acme.invoice.paid"

    def test_the_type_prefix_does_not_follow_a_custom_subject_prefix(self) -> None:
        envelope = build_envelope(spec_event(), "custom.tap", tenant_scoped=False)
        assert envelope.subject == "custom.tap.acme.invoice.paid"
        assert envelope.type == "ensemble.tap.acme.invoice.paid"

    def test_the_hubspot_envelope_unit_test(self) -> None:
        event = NormalizedEvent(
            provider="hubspot",
            entity_type="deal",
            entity_id="12345",
            action="updated",
            provider_time_ns=T_2026,
            provider_event_id="evt_123",
            tenant_id="workspace-123",
        )
        attributes = decoded(build_envelope(event, "ensemble.tap", False).body)
        assert attributes["type"] == "ensemble.tap.hubspot.deal.updated"
        assert attributes["source"] == "tap/hubspot/workspace-123"
        assert attributes["subject"] == "deal/12345"


class TestCloudEventsSdkOracle:
    """The official SDK parses and validates what we publish."""

    def test_the_sdk_reads_the_spec_example(self) -> None:
        envelope = build_envelope(spec_event(), "ensemble.tap", tenant_scoped=False)
        event = JSONFormat().read(None, envelope.body)
        assert event.get_specversion() == "1.0"
        assert event.get_id() == "evt_123"
        assert event.get_source() == "tap/acme/tenant-42"
        assert event.get_type() == "ensemble.tap.acme.invoice.paid"
        assert event.get_subject() == "invoice/invoice_42"
        assert event.get_datacontenttype() == "application/json"
        assert event.get_time() == datetime(2026, 3, 3, 14, 22, tzinfo=UTC)
        assert event.get_extension("tapversion") == "v1"
        assert event.get_extension("taprequestid") == "req-ingress-1"
        assert event.get_data() == json.loads(SPEC_EVENT_JSON)["data"]

    def test_the_v1_compatibility_api_reads_it_too(self) -> None:
        envelope = build_envelope(spec_event(), "ensemble.tap", tenant_scoped=False)
        event = v1_from_json(envelope.body)
        assert event["id"] == "evt_123"
        assert event["tapversion"] == "v1"
        assert event.data == json.loads(SPEC_EVENT_JSON)["data"]

    def test_a_minimal_event_validates(self) -> None:
        event = NormalizedEvent(
            provider="hubspot",
            entity_type="deal",
            entity_id="1",
            action="updated",
            provider_time_ns=T_2026 + 123_456_789,
        )
        parsed = JSONFormat().read(None, build_envelope(event, "ensemble.tap", False).body)
        assert parsed.get_time() == datetime(2026, 3, 3, 14, 22, 0, 123456, tzinfo=UTC)
        assert parsed.get_extension("taprequestid") is None
        assert parsed.get_extension("tapversion") == "v1"

    @settings(max_examples=100, deadline=None)
    @given(
        provider=st.text(min_size=1, max_size=64).filter(str.strip),
        # Within the bounds build_envelope enforces (longer is refused: tested above).
        entity_type=st.text(min_size=1, max_size=MAX_NAME_LENGTH).filter(str.strip),
        entity_id=st.text(min_size=1, max_size=MAX_ENTITY_ID_LENGTH).filter(str.strip),
        action=st.text(min_size=1, max_size=MAX_NAME_LENGTH).filter(str.strip),
        tenant=st.text(),
        request_id=st.text(),
        event_id=st.text(),
        time_ns=st.integers(min_value=0, max_value=253402300799 * NS),
    )
    def test_every_valid_event_is_a_valid_cloudevent(
        self,
        provider: str,
        entity_type: str,
        entity_id: str,
        action: str,
        tenant: str,
        request_id: str,
        event_id: str,
        time_ns: int,
    ) -> None:
        event = NormalizedEvent(
            provider=provider,
            entity_type=entity_type,
            entity_id=entity_id,
            action=action,
            provider_time_ns=time_ns,
            provider_event_id=event_id,
            tenant_id=tenant,
            request_id=request_id,
        )
        envelope = build_envelope(event, "ensemble.tap", tenant_scoped=True)
        parsed = JSONFormat().read(None, envelope.body)
        assert parsed.get_id() == envelope.event_id
        assert parsed.get_type() == envelope.type
        assert all(re.fullmatch(r"[a-z0-9_]+", token) for token in envelope.subject.split("."))


class TestBuildEnvelopeRules:
    def test_without_a_provider_event_id_a_random_evt_id_is_generated(self) -> None:
        first = build_envelope(spec_event(provider_event_id=""), "ensemble.tap", False)
        second = build_envelope(spec_event(provider_event_id=""), "ensemble.tap", False)
        assert re.fullmatch(r"evt_[0-9a-f]{16}", first.event_id)
        assert first.event_id != second.event_id
        attributes = decoded(first.body)
        assert attributes["id"] == first.event_id
        assert "provider_event_id" not in attributes["data"]

    def test_the_provider_event_id_is_trimmed_for_the_id(self) -> None:
        envelope = build_envelope(spec_event(provider_event_id="  evt_9 "), "ensemble.tap", False)
        assert envelope.event_id == "evt_9"

    def test_without_a_tenant_the_source_says_default_and_data_has_no_tenant(self) -> None:
        envelope = build_envelope(spec_event(tenant_id="  "), "ensemble.tap", tenant_scoped=True)
        attributes = decoded(envelope.body)
        assert attributes["source"] == "tap/acme/default"
        assert "tenant_id" not in attributes["data"]
        assert envelope.subject == "ensemble.tap.acme.invoice.paid"

    def test_the_tenant_is_not_an_extension(self) -> None:
        attributes = decoded(build_envelope(spec_event(), "ensemble.tap", False).body)
        assert set(attributes) - {"data"} == {
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "datacontenttype",
            "time",
            "taprequestid",
            "tapversion",
        }

    def test_without_a_request_id_there_is_no_taprequestid(self) -> None:
        envelope = build_envelope(spec_event(request_id=" "), "ensemble.tap", False)
        attributes = decoded(envelope.body)
        assert "taprequestid" not in attributes
        assert "request_id" not in attributes["data"]
        assert attributes["tapversion"] == "v1"
        assert envelope.request_id == ""

    def test_the_request_id_is_trimmed(self) -> None:
        attributes = decoded(build_envelope(spec_event(request_id=" r-1 "), "x", False).body)
        assert attributes["taprequestid"] == "r-1"
        assert attributes["data"]["request_id"] == "r-1"

    def test_changes_are_included_when_present(self) -> None:
        changes = {"dealstage": {"from": None, "to": "closedwon"}}
        attributes = decoded(build_envelope(spec_event(changes=changes), "x", False).body)
        assert attributes["data"]["changes"] == changes
        assert list(attributes["data"])[4] == "changes"

    @pytest.mark.parametrize("empty", [None, {}])
    def test_empty_changes_and_snapshot_are_left_out(self, empty: dict[str, Any] | None) -> None:
        event = spec_event(changes=empty, snapshot=empty)
        data = decoded(build_envelope(event, "x", False).body)["data"]
        assert "changes" not in data
        assert "snapshot" not in data

    def test_data_keeps_raw_values_while_type_and_subject_are_sanitised(self) -> None:
        event = spec_event(provider="Acme", entity_type="Invoice-Item", action="Paid")
        envelope = build_envelope(event, "ensemble.tap", False)
        attributes = decoded(envelope.body)
        assert attributes["type"] == "ensemble.tap.acme.invoice_item.paid"
        assert attributes["subject"] == "Invoice-Item/invoice_42"
        assert attributes["data"]["entity_type"] == "Invoice-Item"
        assert attributes["source"] == "tap/Acme/tenant-42"
        assert envelope.subject == "ensemble.tap.acme.invoice_item.paid"

    def test_time_and_provider_timestamp_agree(self) -> None:
        attributes = decoded(
            build_envelope(spec_event(provider_time_ns=T_2026 + 1), "x", False).body
        )
        assert attributes["time"] == "2026-03-03T14:22:00.000000001Z"
        assert attributes["data"]["provider_timestamp"] == attributes["time"]

    def test_a_25_digit_integer_in_the_snapshot_keeps_every_digit(self) -> None:
        big = 1234567890123456789012345
        envelope = build_envelope(spec_event(snapshot={"id": big}), "x", False)
        assert b'"snapshot":{"id":1234567890123456789012345}' in envelope.body
        assert decoded(envelope.body)["data"]["snapshot"]["id"] == big
        data = JSONFormat().read(None, envelope.body).get_data()
        assert isinstance(data, dict)
        assert data["snapshot"]["id"] == big

    def test_html_characters_survive_semantically(self) -> None:
        snapshot = {"note": "<b> & </b>"}
        attributes = decoded(build_envelope(spec_event(snapshot=snapshot), "x", False).body)
        assert attributes["data"]["snapshot"] == snapshot

    @pytest.mark.parametrize("field", ["provider", "entity_type", "entity_id", "action"])
    @pytest.mark.parametrize("blank", ["", "  ", "\t\n"])
    def test_blank_required_fields_are_normalize_errors(self, field: str, blank: str) -> None:
        with pytest.raises(NormalizeError, match=f"{field} is required"):
            build_envelope(spec_event(**{field: blank}), "ensemble.tap", False)

    def test_a_normalize_error_is_a_value_error(self) -> None:
        assert issubclass(NormalizeError, ValueError)

    @pytest.mark.parametrize(
        "ns",
        [253402300800 * NS, 10**15 * NS, -62135596801 * NS, 10**30 * NS],
        ids=["year-10000", "year-31-million", "year-0", "beyond-time_t"],
    )
    def test_a_time_rfc3339_cannot_express_is_a_normalize_error(self, ns: int) -> None:
        with pytest.raises(NormalizeError, match="time"):
            build_envelope(spec_event(provider_time_ns=ns), "ensemble.tap", False)

    def test_the_last_representable_instant_still_builds(self) -> None:
        envelope = build_envelope(
            spec_event(provider_time_ns=253402300799 * NS + 999_999_999), "x", False
        )
        assert decoded(envelope.body)["time"] == "9999-12-31T23:59:59.999999999Z"


class TestJsonEncoding:
    def test_compact_utf8_json(self) -> None:
        assert json_bytes({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'.encode()

    def test_integers_beyond_64_bits_are_written_exactly(self) -> None:
        assert (
            json_bytes({"n": -(2**70), "m": [2**64]})
            == b'{"n":-1180591620717411303424,"m":[18446744073709551616]}'
        )

    def test_sorted_keys_on_both_paths(self) -> None:
        assert json_bytes({"b": 1, "a": 2}, sort_keys=True) == b'{"a":2,"b":1}'
        assert json_bytes({"b": 2**64, "a": 2}, sort_keys=True) == (
            b'{"a":2,"b":18446744073709551616}'
        )

    def test_a_value_too_deep_for_either_writer_is_a_value_error_not_a_recursion_error(
        self,
    ) -> None:
        """orjson refuses it, and the standard library (the path for big integers) would
        recurse past Python's limit: the caller gets a ValueError it already handles."""
        value: Any = [2**64]
        for _ in range(5_000):
            value = [value]
        with pytest.raises(ValueError, match="nested too deeply"):
            json_bytes(value)
        with pytest.raises(NormalizeError, match="nested too deeply"):
            build_envelope(spec_event(snapshot={"deep": value}), "ensemble.tap", False)

    @pytest.mark.parametrize(
        "snapshot",
        [{"text": "lone \ud800"}, {"values": {1, 2}}, {"n": 2**64, "x": math.nan}],
        ids=["surrogate", "set", "nan-beside-a-big-integer"],
    )
    def test_a_snapshot_json_cannot_express_is_a_normalize_error(
        self, snapshot: dict[str, Any]
    ) -> None:
        with pytest.raises(NormalizeError, match="encode cloudevent"):
            build_envelope(spec_event(snapshot=snapshot), "ensemble.tap", False)


def test_now_ns_is_the_wall_clock_in_nanoseconds() -> None:
    before = time.time_ns()
    now = now_ns()
    assert before <= now <= time.time_ns()


class TestSenderBounds:
    """Values a sender controls that reach a NATS header, subject or id are bounded."""

    def test_an_id_up_to_the_bound_is_kept(self) -> None:
        key = "k" * MAX_ID_LENGTH
        assert bounded_id(key) == key
        assert dedup_id("acme", "t", key) == f"acme:t:{key}"

    @pytest.mark.parametrize("length", [MAX_ID_LENGTH + 1, 64 * 1024])
    def test_a_longer_id_becomes_its_sha256(self, length: int) -> None:
        key = "é" + "k" * (length - 1)
        expected = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        assert bounded_id(key) == expected
        assert dedup_id("acme", "t", key) == f"acme:t:{expected}"

    def test_digests_keep_long_ids_apart_and_redeliveries_together(self) -> None:
        one, two = "a" * 5000 + "1", "a" * 5000 + "2"
        assert bounded_id(one) == bounded_id("a" * 5000 + "1")
        assert bounded_id(one) != bounded_id(two)

    def test_a_long_provider_event_id_is_digested_in_the_id_and_kept_in_the_data(self) -> None:
        long_id = "evt_" + "x" * 70_000
        envelope = build_envelope(spec_event(provider_event_id=long_id), "ensemble.tap", False)
        attributes = decoded(envelope.body)
        assert envelope.event_id == attributes["id"] == bounded_id(long_id)
        assert len(envelope.event_id) == len("sha256:") + 64
        assert attributes["data"]["provider_event_id"] == long_id

    @pytest.mark.parametrize(
        ("field", "limit"),
        [
            ("entity_type", MAX_NAME_LENGTH),
            ("action", MAX_NAME_LENGTH),
            ("entity_id", MAX_ENTITY_ID_LENGTH),
        ],
    )
    def test_names_and_entity_ids_over_their_bound_are_normalize_errors(
        self, field: str, limit: int
    ) -> None:
        assert build_envelope(spec_event(**{field: "x" * limit}), "ensemble.tap", True)
        with pytest.raises(NormalizeError, match=f"{field} is longer than {limit} characters"):
            build_envelope(spec_event(**{field: "x" * (limit + 1)}), "ensemble.tap", True)

    def test_the_longest_subject_fits_a_nats_control_line(self) -> None:
        """tenant keys are at most 128 characters; with entity type and action at their
        bounds the PUB line stays far below nats-server's 4 KiB."""
        subject = nats_subject(
            "ensemble.tap", "acme", "e" * MAX_NAME_LENGTH, "a" * MAX_NAME_LENGTH, "t" * 128
        )
        assert len(subject) < 1024


class TestDedupIds:
    def test_the_dedup_id_holds_provider_tenant_and_key(self) -> None:
        assert dedup_id("acme", "tenant-42", "evt_123") == "acme:tenant-42:evt_123"

    def test_the_same_key_from_two_providers_is_two_ids(self) -> None:
        assert dedup_id("acme", "", "1") != dedup_id("foo", "", "1")

    def test_the_same_key_for_two_tenants_is_two_ids(self) -> None:
        assert dedup_id("acme", "a", "1") != dedup_id("acme", "b", "1")

    def test_the_tenant_is_trimmed(self) -> None:
        assert dedup_id("acme", " t ", "k") == dedup_id("acme", "t", "k")

    def test_the_fallback_key_is_stable_for_the_same_digest(self) -> None:
        """A redelivery without an id hashes the same, even though "now" moved on."""
        first = fallback_dedup_key(spec_event(provider_time_ns=1), "a" * 64)
        again = fallback_dedup_key(spec_event(provider_time_ns=2), "a" * 64)
        assert first == again
        assert re.fullmatch(r"[0-9a-f]{64}", first)

    def test_the_fallback_key_differs_for_a_different_digest(self) -> None:
        assert fallback_dedup_key(spec_event(), "a" * 64) != fallback_dedup_key(
            spec_event(), "b" * 64
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"provider": "other"},
            {"tenant_id": "other"},
            {"entity_type": "other"},
            {"entity_id": "other"},
            {"action": "other"},
        ],
    )
    def test_the_fallback_key_depends_on_the_event_identity(self, change: dict[str, str]) -> None:
        digest = "c" * 64
        assert fallback_dedup_key(spec_event(), digest) != fallback_dedup_key(
            spec_event(**change), digest
        )
