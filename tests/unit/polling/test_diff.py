"""The snapshot diff: top-level changes, deep and type-strict equality (docs/polling.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_tap.poller.diff import diff, same


def test_spec_example() -> None:
    previous = {"stage": "open", "amount": 10}
    current = {"stage": "won", "amount": 10, "owner": "alice"}
    assert diff(previous, current) == {
        "stage": {"from": "open", "to": "won"},
        "owner": {"from": None, "to": "alice"},
    }


def test_first_sighting_lists_every_field() -> None:
    assert diff(None, {"a": 1, "b": None}) == {
        "a": {"from": None, "to": 1},
        "b": {"from": None, "to": None},
    }


def test_a_disappearing_key_is_a_change_even_when_it_was_null() -> None:
    assert diff({"gone": None, "kept": 1}, {"kept": 1}) == {"gone": {"from": None, "to": None}}


def test_nested_objects_and_arrays_compare_deeply() -> None:
    # The reference panicked here (Go interface equality on maps and slices).
    previous = {"attributes": {"type": "Opportunity"}, "Line": [{"Amount": 5}], "x": [1, [2]]}
    assert diff(previous, {"attributes": {"type": "Opportunity"}, "Line": [{"Amount": 5.0}],
                           "x": [1, [2]]}) == {}  # fmt: skip
    changed = diff(previous, {**previous, "Line": [{"Amount": 6}]})
    assert changed == {"Line": {"from": [{"Amount": 5}], "to": [{"Amount": 6}]}}


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (True, 1, False),
        (False, 0, False),
        (1, 1.0, True),
        (0, -0.0, True),
        (None, None, True),
        (None, "", False),
        ("1", 1, False),
        ([], {}, False),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ([1, 2], [2, 1], False),
        ({"a": [True]}, {"a": [1]}, False),
        (10**30, 10**30, True),
    ],
)
def test_type_strict_equality(left: Any, right: Any, equal: bool) -> None:
    assert same(left, right) is equal
    assert same(right, left) is equal


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_a_snapshot_never_differs_from_itself(snapshot: dict[str, Any]) -> None:
    assert diff(snapshot, snapshot) == {}


@given(st.dictionaries(st.text(max_size=2), json_values, max_size=4),
       st.dictionaries(st.text(max_size=2), json_values, max_size=4))  # fmt: skip
def test_changes_name_exactly_the_differing_keys(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    changes = diff(before, after)
    for key in before.keys() | after.keys():
        differs = key not in before or key not in after or not same(before[key], after[key])
        assert (key in changes) is differs
