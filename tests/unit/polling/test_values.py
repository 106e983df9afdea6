"""Dedup ids (spec §6.5 vectors), time parsing of provider values, checkpoint encoding."""

from __future__ import annotations

from typing import Any

import pytest

from ensemble_tap.events import format_time_ns, poll_dedup_id
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
def test_spec_dedup_vectors(parts: tuple[str, ...], expected: str) -> None:
    assert poll_dedup_id(*parts) == expected


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
