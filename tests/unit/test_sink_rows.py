"""Message → row: column mapping, id and time fallbacks, original JSON text, poison, and the
fast path agreeing with the checked one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_tap.events import NormalizedEvent, build_envelope
from ensemble_tap.sink.rows import _DATA_STRINGS as DATA_STRINGS
from ensemble_tap.sink.rows import PoisonMessage, Row, checked_row, convert, fast_row
from ensemble_tap.sink.schema import COLUMNS

STREAM_NS = 1_764_000_000_123_000_000  # 2025-11-24T16:00:00.123Z


def stored() -> int:
    """When JetStream stored the message."""
    return STREAM_NS


def columns(row: Row) -> dict[str, Any]:
    return dict(zip(COLUMNS, orjson.loads(row.line), strict=True))


def cloudevent(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt_1",
        "source": "tap/acme/tenant-1",
        "type": "ensemble.tap.acme.deal.updated",
        "subject": "deal/42",
        "datacontenttype": "application/json",
        "time": "2026-03-01T10:00:00.123456789Z",
        "data": {
            "provider": "acme",
            "entity_type": "deal",
            "entity_id": "42",
            "action": "updated",
            "provider_event_id": "evt_1",
            "tenant_id": "tenant-1",
            "request_id": "req-1",
            "changes": {"stage": {"from": "a", "to": "b"}},
            "snapshot": {"stage": "b", "amount": 1200},
        },
    }
    event.update(overrides)
    return event


def test_envelope_of_the_service_maps_to_every_column() -> None:
    envelope = build_envelope(
        NormalizedEvent(
            "acme",
            "deal",
            "42",
            "updated",
            1_772_359_200_123_456_789,
            provider_event_id="evt_blackbox_1",
            tenant_id="tenant-1",
            request_id="req-1",
            changes={"stage": {"from": "a", "to": "b"}},
            snapshot={"stage": "b"},
        ),
        "ensemble.tap",
        False,
    )
    row = convert(envelope.body, stored)
    assert columns(row) == {
        "id": "evt_blackbox_1",
        "type": "ensemble.tap.acme.deal.updated",
        "source": "tap/acme/tenant-1",
        "subject": "deal/42",
        "time": "2026-03-01T10:00:00.123456789Z",
        "provider": "acme",
        "entity_type": "deal",
        "entity_id": "42",
        "action": "updated",
        "changes": '{"stage":{"from":"a","to":"b"}}',
        "snapshot": '{"stage":"b"}',
        "provider_event_id": "evt_blackbox_1",
        "tenant_id": "tenant-1",
        "request_id": "req-1",
    }
    assert row.key == ("acme", "tenant-1", "evt_blackbox_1")


def test_missing_parts_become_empty_or_null() -> None:
    row = columns(convert(b'{"specversion":"1.0"}', stored))
    assert row["changes"] == row["snapshot"] == "null"
    assert row["tenant_id"] is None
    assert row["provider"] == row["type"] == row["subject"] == ""


def test_empty_tenant_is_null() -> None:
    event = cloudevent()
    event["data"]["tenant_id"] = ""
    assert columns(convert(orjson.dumps(event), stored))["tenant_id"] is None


def test_missing_time_is_the_stream_time_not_now() -> None:
    """A redelivery converts to the same row (the reference used 'now', W-CH-15)."""
    body = orjson.dumps(cloudevent(time=None))
    first, second = convert(body, stored), convert(body, stored)
    assert columns(first)["time"] == "2025-11-24T16:00:00.123Z"
    assert first == second


@pytest.mark.parametrize(
    ("ce_id", "provider_event_id", "expected"),
    [
        ("evt_1", "pe_1", "evt_1"),
        ("  ", " pe_1 ", "pe_1"),
        (None, "", None),
    ],
)
def test_id_fallbacks(ce_id: str | None, provider_event_id: str, expected: str | None) -> None:
    event = cloudevent(id=ce_id)
    event["data"]["provider_event_id"] = provider_event_id
    body = orjson.dumps(event)
    row = columns(convert(body, stored))
    assert row["id"] == (expected or "evt_" + hashlib.sha256(body).hexdigest())


def test_request_id_falls_back_to_the_extension_attribute() -> None:
    event = cloudevent(taprequestid="req-ext")
    del event["data"]["request_id"]
    assert columns(convert(orjson.dumps(event), stored))["request_id"] == "req-ext"


def test_big_integers_and_html_characters_survive() -> None:
    """W-CH-17: the reference re-encoded through float64 and escaped <, >, &."""
    body = (
        b'{"specversion":"1.0","id":"e","data":{"snapshot":'
        b'{"id":123456789012345678901234567890,"note":"<b>&</b>","f":1.50}}}'
    )
    assert (
        columns(convert(body, stored))["snapshot"]
        == '{"id":123456789012345678901234567890,"note":"<b>&</b>","f":1.50}'
    )


def test_original_text_of_other_producers_is_kept() -> None:
    """Spacing, escapes and key order of a body that orjson did not write stay as they were."""
    body = (
        b'{ "specversion" : "1.0", "id": "e",\n "data": { "changes" : {"a": {"to": 1, "from": 0}}'
        b', "snapshot": {"x": "\\u00e9", "y": [1, 2.0, 1e3]} } }'
    )
    row = columns(convert(body, stored))
    assert row["changes"] == '{"a": {"to": 1, "from": 0}}'
    assert row["snapshot"] == '{"x": "\\u00e9", "y": [1, 2.0, 1e3]}'


def test_duplicate_keys_keep_the_last_value_like_the_parser() -> None:
    body = b'{"specversion":"1.0","data":{"snapshot": {"a": 1}, "snapshot": {"a":  2}}}'
    assert columns(convert(body, stored))["snapshot"] == '{"a":  2}'


@pytest.mark.parametrize(
    "time_text",
    ["2026-03-01T10:00:00Z", "2026-03-01T12:00:00.5+02:00", "1970-01-01T00:00:00.000000001Z"],
)
def test_rfc3339_times_pass_through(time_text: str) -> None:
    assert columns(convert(orjson.dumps(cloudevent(time=time_text)), stored))["time"] == (time_text)


POISON: list[tuple[bytes, str, str]] = [
    (b"not json", "json", "not JSON"),
    (b"\xff\xfe", "json", "not JSON"),
    (b'{"id": 1', "json", "not JSON"),
    (b"[1, 2]", "cloudevent", "not a CloudEvent: the body is not a JSON object"),
    (b'{"id":"e"}', "cloudevent", "not a CloudEvent: specversion must be 1.0"),
    (b'{"specversion":"2.0"}', "cloudevent", "not a CloudEvent: specversion must be 1.0"),
    (b'{"specversion":["1.0"]}', "cloudevent", "not a CloudEvent: specversion must be 1.0"),
    (b'{"specversion":"1.0","id":7}', "cloudevent", "not a CloudEvent: id must be a string"),
    (
        b'{"specversion":"1.0","time":"yesterday"}',
        "cloudevent",
        "not a CloudEvent: time is not RFC 3339",
    ),
    (
        b'{"specversion":"1.0","time":"2026-02-30T00:00:00Z"}',
        "cloudevent",
        "not a CloudEvent: time is not a valid date",
    ),
    (
        b'{"specversion":"1.0","time":"2026-01-01T00:00:00+24:00"}',
        "cloudevent",
        "not a CloudEvent: time is not RFC 3339",
    ),
    (
        b'{"specversion":"1.0","time":"9999-01-01T00:00:00Z"}',
        "time_range",
        "time 9999-01-01T00:00:00Z is outside 1901…2298",
    ),
    (b'{"specversion":"1.0","data":"text"}', "data", "data must be a JSON object"),
    (
        b'{"specversion":"1.0","datacontenttype":"text/plain","data":{}}',
        "data",
        "data is not JSON (datacontenttype)",
    ),
    (
        b'{"specversion":"1.0","data_base64":"e30="}',
        "data",
        "data_base64 is not a Tap data object",
    ),
    (b'{"specversion":"1.0","data":{"provider":1}}', "data", "data.provider must be a string"),
    (
        b'{"specversion":"1.0","data":{"changes":{"a":1}}}',
        "data",
        "data.changes must map fields to objects",
    ),
    (b'{"specversion":"1.0","data":{"snapshot":[1]}}', "data", "data.snapshot must be an object"),
]


@pytest.mark.parametrize(("body", "reason", "detail"), POISON)
def test_poison(body: bytes, reason: str, detail: str) -> None:
    with pytest.raises(PoisonMessage) as info:
        convert(body, stored)
    assert (info.value.reason, info.value.detail) == (reason, detail)


def test_poison_keeps_what_it_could_read_for_the_dead_letter() -> None:
    body = b'{"specversion":"1.0","data":{"provider":"acme","tenant_id":"t","snapshot":[1]}}'
    with pytest.raises(PoisonMessage) as info:
        convert(body, stored)
    assert info.value.field("data", "provider") == "acme"
    assert info.value.field("data", "tenant_id") == "t"
    assert info.value.field("data", "missing") == ""


def test_json_content_types_are_accepted() -> None:
    for content_type in ("application/json", "application/cloudevents+json; charset=utf-8"):
        convert(json.dumps(cloudevent(datacontenttype=content_type)).encode(), stored)


# ------------------------------------------------------------------ fast path == checked path

CHANGES, SNAPSHOT = COLUMNS.index("changes"), COLUMNS.index("snapshot")
ODD_VALUES = st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=2))
STRINGS = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["", "  ", " x ", "{}"]))
FIELD = st.one_of(STRINGS, STRINGS, ODD_VALUES, st.dictionaries(st.text(max_size=3), st.none()))
TIMES = st.sampled_from(
    [
        None,
        "",
        "2026-03-01T10:00:00Z",
        "2026-03-01T12:00:00.5+02:00",
        "2026-02-30T00:00:00Z",
        "9999-01-01T00:00:00Z",
        "2026-03-01 10:00:00Z",
        "yesterday",
        7,
    ]
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
CHANGE_MAPS = st.dictionaries(
    st.text(max_size=4),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["from", "to"]), JSON_VALUES)),
    max_size=3,
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """CloudEvent-like bodies: mostly well formed, with odd types, times, ids and shapes,
    written compactly (as this service does) or with the spacing and escapes of others."""
    event: dict[str, Any] = {}
    for name in ("specversion", "id", "type", "source", "subject", "taprequestid"):
        if draw(st.booleans()):
            event[name] = draw(st.one_of(st.just("1.0"), FIELD) if name == "specversion" else FIELD)
    if draw(st.booleans()):
        event["time"] = draw(TIMES)
    if draw(st.integers(0, 3)) == 0:
        event["datacontenttype"] = draw(
            st.sampled_from([None, "application/json", "text/json", "text/plain", 3])
        )
    if draw(st.integers(0, 9)) == 0:
        event["data_base64"] = draw(st.sampled_from([None, "e30="]))
    shape = draw(st.integers(0, 9))
    if shape == 0:
        event["data"] = draw(st.one_of(st.none(), st.text(max_size=3), ODD_VALUES))
    elif shape > 1:
        data: dict[str, Any] = {}
        for name in DATA_STRINGS:
            if draw(st.integers(0, 3)):
                data[name] = draw(FIELD)
        if draw(st.booleans()):
            data["changes"] = draw(st.one_of(CHANGE_MAPS, CHANGE_MAPS, JSON_VALUES))
        if draw(st.booleans()):
            data["snapshot"] = draw(st.one_of(st.dictionaries(st.text(), JSON_VALUES), JSON_VALUES))
        event["data"] = data
    if draw(st.booleans()):
        try:
            return orjson.dumps(event)
        except TypeError:  # an integer beyond 64 bits
            pass
    indent = draw(st.sampled_from([None, 1]))
    return json.dumps(event, indent=indent, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=600)
@given(messages())
def test_the_fast_path_accepts_only_what_the_checked_path_accepts_with_the_same_row(
    body: bytes,
) -> None:
    fast = fast_row(body)
    try:
        expected: Row | None = checked_row(body, stored)
    except PoisonMessage:
        expected = None
    if fast is None:
        return
    assert expected is not None, "the fast path stored what the checked path calls poison"
    assert fast.key == expected.key
    got, want = orjson.loads(fast.line), orjson.loads(expected.line)
    for index in (CHANGES, SNAPSHOT):
        assert orjson.loads(got[index]) == orjson.loads(want[index])
        assert got[index] == "null" or got[index].encode() in body  # the original text
        got[index] = want[index] = None
    assert got == want


def test_the_services_own_envelopes_take_the_fast_path() -> None:
    body = orjson.dumps(cloudevent())
    assert fast_row(body) == checked_row(body, stored)
