"""Dedup ids (the reference's vectors and their content-digest form), time parsing of
provider values, checkpoint encoding."""

from __future__ import annotations

from typing import Any

import pytest

from ensemble_tap.events import format_time_ns, poll_dedup_id
from ensemble_tap.poller.engine import canonical
from ensemble_tap.providers.common import provider_time_ns, to_string
from ensemble_tap.state import Position, StateError, StreamState
from tests.support.fakes import at


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            ("hubspot", "tenant-1", "deal", "d1", "created", "2026-03-03T14:22:00Z"),
            "poll_b00df114f51c44100f179aac8e1548062dbfd12965de65e47d5347b30cda9d58",
        ),
        (
            ("hubspot", "", "deals", "deal_1", "updated", "2026-03-03T14:22:00.5Z"),
            "poll_c99ce9c9db7aca6a14c56afa854b08758db7b2db710298df55fd206681f61471",
        ),
    ],
)
def test_spec_dedup_vectors(parts: tuple[str, str, str, str, str, str], expected: str) -> None:
    # Without a content digest the id is the reference's; the engine always passes one.
    assert poll_dedup_id(*parts, "") == expected


AMOUNT_2 = "2c0c420e4bc652b18f6c602b9624e8bdeea5168455459f1c019c12f94ead9713"
AMOUNT_3 = "2bcc41157cf3831ac03272eea1b5fb7f0cb01bd72091e4caabbe31355548a8a5"
TITLE_X = "27503c8b55d6cdd9256053d7f84ead30d502467a1ed11f64071aa34c3a1d0e25"


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            ("hubspot", "tenant-1", "deal", "d1", "updated", "2026-03-03T14:22:00Z", AMOUNT_2),
            "poll_209b1b3434549e637156166a0fd468f3d226904baf85f396624bbe891774f1a4",
        ),
        (
            ("hubspot", "tenant-1", "deal", "d1", "updated", "2026-03-03T14:22:00Z", AMOUNT_3),
            "poll_02fe755ab5324c69dbe9dca737dcdb27140322974adba172fdf61d51917136e5",
        ),
        (  # no modification time: the content alone
            ("notion", "", "page", "p1", "created", "", TITLE_X),
            "poll_3f64955a128e6bc79e0e5a0781be66527ea07e4eb9ee06405e7a340b8342aaec",
        ),
    ],
)
def test_dedup_vectors_with_content(parts: tuple[str, ...], expected: str) -> None:
    """``poll_`` + SHA-256 of the reference's string + ``|sha256:<content digest>``; fixed,
    as ids must stay the same across releases for deduplication to hold."""
    assert poll_dedup_id(*parts) == expected


def test_content_digest_is_sha256_of_sorted_compact_json() -> None:
    """The digest in the id is the one the engine stores and compares snapshots by."""
    assert canonical({"id": "d1", "amount": "2"}).digest == AMOUNT_2
    assert canonical({"id": "d1", "amount": "3"}).payload == b'{"amount":"3","id":"d1"}'
    assert canonical({"id": "d1", "amount": "3"}).digest == AMOUNT_3


def test_dedup_id_tells_contents_apart_but_not_key_order() -> None:
    """Two contents sharing one modification time (the issue's deal: amount 2, then 3 within
    one HubSpot millisecond) get two ids; the same content read again, whatever its key order,
    gets the same id."""
    time = "2026-03-03T14:22:00.123Z"

    def poll_id(snapshot: dict[str, Any], action: str = "updated") -> str:
        digest = canonical(snapshot).digest
        return poll_dedup_id("hubspot", "", "deal", "d1", action, time, digest)

    two = {"id": "d1", "amount": "2", "hs_lastmodifieddate": time}
    three = {"id": "d1", "amount": "3", "hs_lastmodifieddate": time}
    assert poll_id(two) != poll_id(three)
    assert poll_id(two) == poll_id(dict(reversed(list(two.items()))))
    assert poll_id(two) != poll_id(two, "created")
    nested = {"id": "d1", "lines": [{"b": 1, "a": 2}]}
    assert poll_id(nested) == poll_id({"lines": [{"a": 2, "b": 1}], "id": "d1"})
    assert poll_id(nested) != poll_id({"id": "d1", "lines": [{"a": 2}, {"b": 1}]})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-03T14:22:00Z", "2026-03-03T14:22:00Z"),
        ("2026-03-03T15:22:00.123+01:00", "2026-03-03T14:22:00.123Z"),
        ("2026-03-03T15:00:00.000+0000", "2026-03-03T15:00:00Z"),  # Salesforce
        ("2026-03-03T08:20:00-08:00", "2026-03-03T16:20:00Z"),  # QuickBooks
        ("1709562120000", "2024-03-04T14:22:00Z"),  # epoch milliseconds
        ("1709562120", "2024-03-04T14:22:00Z"),  # epoch seconds
        (1709562120000, "2024-03-04T14:22:00Z"),
        (" 2026-03-03T14:22:00.5Z ", "2026-03-03T14:22:00.5Z"),
    ],
)
def test_provider_times(value: Any, expected: str) -> None:
    parsed = provider_time_ns(value)
    assert parsed is not None and format_time_ns(parsed) == expected


@pytest.mark.parametrize("value", ["", "yesterday", None, True, {}, "2026-13-03T00:00:00Z"])
def test_unusable_provider_times(value: Any) -> None:
    assert provider_time_ns(value) is None


def test_to_string_vectors() -> None:
    assert to_string(12.0) == "12"
    assert to_string(42) == "42"
    assert to_string(" x ") == "x"
    odd: list[Any] = [True, None, {}, []]
    assert [to_string(v) for v in odd] == ["", "", "", ""]


def test_checkpoint_round_trip() -> None:
    state = StreamState(
        cursor_ns=at("2026-03-03T14:22:00Z") + 500_000_000,
        resume=Position(at("2026-03-03T14:00:00Z"), {"after": "200", "n": [1]}),
    )
    text = state.to_json()
    assert text == (
        b'{"cursor":"2026-03-03T14:22:00.5Z","resume":{"since":"2026-03-03T14:00:00Z",'
        b'"token":{"after":"200","n":[1]}}}'
    )
    assert StreamState.from_json(text) == state
    assert StreamState.from_json(b'{"cursor":null}') == StreamState()
    with pytest.raises(StateError):
        StreamState.from_json(b"not json")
