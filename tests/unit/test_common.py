"""Helpers shared by provider modules (docs/compatibility.md, "Normalization and CloudEvents")."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson
import pytest

from ensemble_tap.events import (
    CLOUDEVENT_LEVELS,
    MAX_JSON_DEPTH,
    ORJSON_MAX_DEPTH,
    NormalizedEvent,
    build_envelope,
    parse_rfc3339_ns,
)
from ensemble_tap.providers.base import BadPayload, SecretNotConfigured
from ensemble_tap.providers.common import (
    derive_entity_action,
    digest,
    epoch_number_ns,
    extract_entity_id,
    extract_timestamp_ns,
    parse_epoch_or_rfc3339_ns,
    parse_json,
    parse_json_object,
    require_secrets,
    time_value_ns,
    to_string,
)
from tests.unit.webhooks import NS

T_2026 = parse_rfc3339_ns("2026-03-03T14:22:00Z") or 0


class TestParseJson:
    def test_an_object_parses(self) -> None:
        assert parse_json(b'{"a":[1,"x",null,true]}') == {"a": [1, "x", None, True]}

    def test_an_18_digit_id_is_an_exact_integer_not_a_float(self) -> None:
        value = parse_json(b'{"id": 820982911946154508}')
        assert value["id"] == 820982911946154508
        assert isinstance(value["id"], int)

    def test_a_25_digit_integer_keeps_every_digit(self) -> None:
        value = parse_json(b'{"id": 1234567890123456789012345}')
        assert value["id"] == 1234567890123456789012345

    def test_integers_just_beyond_64_bits_stay_exact(self) -> None:
        assert parse_json(b"[18446744073709551616]") == [18446744073709551616]
        assert parse_json(b"[-9223372036854775809]") == [-9223372036854775809]

    def test_a_long_digit_run_inside_a_string_does_not_change_the_result(self) -> None:
        assert parse_json(b'{"s":"12345678901234567890123","n":1.5}') == {
            "s": "12345678901234567890123",
            "n": 1.5,
        }

    def test_invalid_utf8_inside_a_string_becomes_the_replacement_character(self) -> None:
        assert parse_json(b'{"name":"caf\xe9 \xff!"}') == {"name": "caf\ufffd \ufffd!"}

    def test_invalid_utf8_together_with_a_long_integer(self) -> None:
        assert parse_json(b'{"n":"\xff","id":12345678901234567890123}') == {
            "n": "\ufffd",
            "id": 12345678901234567890123,
        }

    def test_a_lone_surrogate_escape_becomes_the_replacement_character(self) -> None:
        """Go decodes an unpaired ``\\ud800`` escape to U+FFFD; so do we (text stays UTF-8)."""
        value = parse_json(b'{"a":"x\\ud800y","\\udfff":1}')
        assert value == {"a": "x\ufffdy", "\ufffd": 1}

    def test_a_surrogate_pair_escape_is_one_character(self) -> None:
        assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"

    @pytest.mark.parametrize(
        "body",
        [b"", b"   ", b"{", b"{'a':1}", b"[1,]", b"\xef\xbb\xbf{}", b"NaN", b'{"a":-Infinity}'],
        ids=["empty", "blank", "truncated", "single-quotes", "trailing-comma", "bom", "nan", "inf"],
    )
    def test_invalid_json_is_a_bad_payload(self, body: bytes) -> None:
        with pytest.raises(BadPayload, match="not valid JSON"):
            parse_json(body)

    def test_absurdly_deep_nesting_is_a_bad_payload_not_a_recursion_error(self) -> None:
        with pytest.raises(BadPayload, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            parse_json(b"[" * 100_000 + b"]" * 100_000)

    def test_an_integer_beyond_the_interpreter_digit_limit_is_a_bad_payload(self) -> None:
        with pytest.raises(BadPayload):
            parse_json(b"[" + b"9" * 5000 + b"]")

    @pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null"])
    def test_parse_json_object_requires_an_object(self, body: bytes) -> None:
        with pytest.raises(BadPayload, match="must be a JSON object"):
            parse_json_object(body)


def nested(levels: int, tail: bytes = b"1") -> bytes:
    """``levels`` objects one inside the other, ``tail`` in the innermost."""
    return b'{"a":' * levels + tail + b"}" * levels


class TestJsonDepth:
    """One limit for parsing and writing: a body orjson could parse but not write back inside
    its CloudEvent (``orjson.dumps`` stops at 254 levels, ``orjson.loads`` at 1,024, the
    standard library near Python's recursion limit) is refused when parsed."""

    def test_orjson_writes_254_levels_and_no_more(self) -> None:
        """The library fact MAX_JSON_DEPTH rests on; an upgrade that changes it fails here."""
        value = orjson.loads(nested(ORJSON_MAX_DEPTH))
        assert orjson.dumps(value)
        with pytest.raises(TypeError, match="Recursion limit"):
            orjson.dumps([value])
        assert MAX_JSON_DEPTH == ORJSON_MAX_DEPTH - CLOUDEVENT_LEVELS == 252

    @pytest.mark.parametrize(
        "tail", [b"1", b"12345678901234567890123", b'"\\ud800"', b'"\xff"'], ids=str
    )
    def test_the_deepest_accepted_body_on_either_parser_path(self, tail: bytes) -> None:
        """The last three tails take the standard-library path (big integer, lone surrogate,
        invalid UTF-8)."""
        assert parse_json(nested(MAX_JSON_DEPTH, tail))
        with pytest.raises(BadPayload, match=f"JSON nested deeper than {MAX_JSON_DEPTH} levels"):
            parse_json(nested(MAX_JSON_DEPTH + 1, tail))

    @pytest.mark.parametrize("levels", [253, 970, 1_000, 1_024, 1_025, 5_000])
    def test_deeper_bodies_are_bad_payloads(self, levels: int) -> None:
        """970–1,024 levels once parsed and then failed to serialize (a bare 500)."""
        for body in (nested(levels), b"[" * levels + b"]" * levels):
            with pytest.raises(BadPayload, match="nested deeper than"):
                parse_json(body)

    def test_depth_counts_the_deepest_branch_of_a_wide_body(self) -> None:
        wide = b'{"items":[' + b",".join([b'{"id":1,"x":[1,2]}'] * 300) + b"]}"
        assert len(parse_json(wide)["items"]) == 300
        deep_branch = b'{"items":[{"id":1},' + nested(MAX_JSON_DEPTH - 1) + b"]}"
        with pytest.raises(BadPayload, match="nested deeper than"):
            parse_json(deep_branch)

    def test_every_accepted_body_fits_in_its_cloudevent(self) -> None:
        body = parse_json(nested(MAX_JSON_DEPTH))
        event = NormalizedEvent("acme", "deal", "1", "updated", 0, snapshot=body)
        assert build_envelope(event, "ensemble.tap", False).body


def test_digest_is_lower_case_sha256_hex() -> None:
    assert digest(b"abc") == hashlib.sha256(b"abc").hexdigest()


class TestToString:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("  text \n", "text"),
            ("", ""),
            (321, "321"),
            (-7, "-7"),
            (0, "0"),
            (820982911946154508, "820982911946154508"),
            (1234567890123456789012345, "1234567890123456789012345"),
            (1.5, "1.5"),
            (1.0, "1"),
            (-2.0, "-2"),
            (0.0, "0"),
            (1e21, "1e+21"),
            (math.nan, ""),
            (math.inf, ""),
            (True, ""),
            (False, ""),
            (None, ""),
            ({"id": 1}, ""),
            ([1], ""),
        ],
    )
    def test_scalar_to_text(self, value: Any, expected: str) -> None:
        assert to_string(value) == expected

    def test_a_json_id_is_never_routed_through_a_float(self) -> None:
        body = parse_json(b'{"id": 820982911946154508}')
        assert to_string(body["id"]) == "820982911946154508"


class TestExtractEntityId:
    def test_keys_are_tried_in_order(self) -> None:
        obj = {"resource_id": "r", "object_id": "o", "event_id": "e", "uuid": "u", "id": "i"}
        assert extract_entity_id(obj) == "i"
        del obj["id"]
        assert extract_entity_id(obj) == "u"
        del obj["uuid"]
        assert extract_entity_id(obj) == "e"
        del obj["event_id"]
        assert extract_entity_id(obj) == "o"
        del obj["object_id"]
        assert extract_entity_id(obj) == "r"

    def test_blank_and_non_scalar_values_are_skipped(self) -> None:
        assert (
            extract_entity_id({"id": "  ", "uuid": None, "event_id": True, "object_id": 5}) == "5"
        )

    def test_data_id_then_data_object_id_are_the_fallback(self) -> None:
        assert extract_entity_id({"data": {"id": "d1", "object_id": "d2"}}) == "d1"
        assert extract_entity_id({"data": {"object_id": "d2"}}) == "d2"

    def test_top_level_keys_win_over_data(self) -> None:
        assert extract_entity_id({"uuid": "u", "data": {"id": "d"}}) == "u"

    @pytest.mark.parametrize("obj", [None, [], "id", 5, {}, {"data": "x"}, {"data": {"uuid": 1}}])
    def test_unknown_when_nothing_matches(self, obj: Any) -> None:
        assert extract_entity_id(obj) == "unknown"

    def test_numeric_ids_are_exact(self) -> None:
        body = parse_json(b'{"id": 1234567890123456789012345}')
        assert extract_entity_id(body) == "1234567890123456789012345"


class TestExtractTimestamp:
    def test_the_first_parseable_key_in_order_wins(self) -> None:
        obj = {
            "time": "2020-01-01T00:00:00Z",
            "timestamp": "2026-03-03T14:22:00Z",
            "created": "not a time",
        }
        assert extract_timestamp_ns(obj) == T_2026

    def test_offsets_are_converted_to_utc(self) -> None:
        assert extract_timestamp_ns({"created_at": "2026-03-03T16:22:00+02:00"}) == T_2026

    def test_numeric_epochs_are_not_timestamps_here(self) -> None:
        assert extract_timestamp_ns({"created": 1772547720, "updated_at": "1772547720"}) is None

    @pytest.mark.parametrize("obj", [None, [], {}, {"occurred_at": ""}])
    def test_none_when_nothing_parses(self, obj: Any) -> None:
        assert extract_timestamp_ns(obj) is None


class TestDeriveEntityAction:
    @pytest.mark.parametrize(
        ("event_type", "hint", "expected"),
        [
            ("invoice.paid", "", ("invoice", "paid")),
            ("push", "", ("push", "push")),
            ("", "", ("event", "updated")),
            ("contact.updated", "deleted", ("contact", "deleted")),
            ("invoice_item.created", "", ("invoice_item", "created")),
            ("customer.subscription.updated", "", ("customer.subscription", "updated")),
            ("orders/paid", "", ("orders", "paid")),
            ("deal:won", "", ("deal", "won")),
            ("Invoice.PAID", "", ("invoice", "paid")),
            ("contact.updated", "  DELETED ", ("contact", "deleted")),
            ("..", "", ("event", "updated")),
            ("  ", "", ("event", "updated")),
            ("", "archived", ("event", "archived")),
            ("a. .b", "", ("a", "b")),
            ("deal. .", "", ("deal", "deal")),
        ],
    )
    def test_entity_and_action(self, event_type: str, hint: str, expected: tuple[str, str]) -> None:
        assert derive_entity_action(event_type, hint) == expected

    def test_underscore_is_not_a_separator(self) -> None:
        assert derive_entity_action("invoice_item.created")[0] == "invoice_item"


class TestEpochAndRfc3339Text:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("1772547720000", T_2026),
            ("1772547720", T_2026),
            (" 1772547720 ", T_2026),
            ("999999999999", 999_999_999_999 * NS),
            ("0000000000001", 1_000_000),
            ("2026-03-03T14:22:00Z", T_2026),
            ("9" * 19, int("9" * 19) * 1_000_000),
        ],
        ids=[
            "13-digit-ms",
            "10-digit-s",
            "trimmed",
            "12-digit-s",
            "13-digit-ms-zeros",
            "rfc",
            "19",
        ],
    )
    def test_parses(self, text: str, expected: int) -> None:
        assert parse_epoch_or_rfc3339_ns(text) == expected

    @pytest.mark.parametrize("text", ["", " ", "1" * 20, "+17", "-17", "17.5", "١٧", "soon"])
    def test_rejects(self, text: str) -> None:
        assert parse_epoch_or_rfc3339_ns(text) is None


class TestEpochNumber:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (1772547720, T_2026),
            (1772547720000, T_2026),
            (1772547720.5, T_2026 + NS // 2),
            (999_999_999_999, 999_999_999_999 * NS),
            (1_000_000_000_000, 1_000_000_000_000 * 1_000_000),
            (0, 0),
        ],
        ids=["seconds", "milliseconds", "fractional-seconds", "below-1e12", "1e12-is-ms", "zero"],
    )
    def test_numbers_above_1e12_are_milliseconds_else_seconds(
        self, value: float, expected: int
    ) -> None:
        assert epoch_number_ns(value) == expected

    @pytest.mark.parametrize(
        "value",
        [
            True,
            False,
            None,
            "1772547720",
            -1,
            1e17 + 1e3,
            10**400,
            -(10**400),
            math.nan,
            math.inf,
            [1],
        ],
    )
    def test_non_numbers_negative_and_absurd_values_are_none(self, value: Any) -> None:
        assert epoch_number_ns(value) is None


class TestTimeValue:
    def test_strings_use_the_text_rules(self) -> None:
        assert time_value_ns("2026-03-03T14:22:00Z") == T_2026
        assert time_value_ns("1772547720000") == T_2026

    def test_numbers_use_the_epoch_rules(self) -> None:
        assert time_value_ns(1772547720000) == T_2026

    def test_other_values_are_none(self) -> None:
        assert time_value_ns(None) is None
        assert time_value_ns({"t": 1}) is None


class TestRequireSecrets:
    def test_configured_secrets_are_returned_in_order(self) -> None:
        assert list(require_secrets(["old", "new"], "acme")) == ["old", "new"]

    def test_no_secret_is_a_configuration_error_with_status_500(self) -> None:
        with pytest.raises(SecretNotConfigured, match="provider acme secret is empty") as info:
            require_secrets([], "acme")
        assert info.value.status == 500
