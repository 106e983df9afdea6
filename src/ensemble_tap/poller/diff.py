"""Deep, type-strict comparison of snapshots and the ``changes`` map of an update.

The reference compared decoded JSON with Go interface equality and crashed on nested objects
or arrays. Here values are equal when they mean the same JSON value: numbers compare
numerically (``1 == 1.0``), booleans never equal numbers, and objects and arrays compare
recursively.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def same(left: Any, right: Any) -> bool:
    """Whether two decoded JSON values are the same value."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        if left.keys() != right.keys():
            return False
        return all(same(value, right[key]) for key, value in left.items())
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if type(left) is not type(right):
        return False
    return bool(left == right)


def diff(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level fields that differ, as ``{field: {"from": old, "to": new}}``.

    A field that appears gets ``from: null``, one that disappears ``to: null`` (even when its
    old value was null, so the disappearance is visible). A missing previous snapshot is an
    empty one, so a first sighting lists every field.
    """
    before: Mapping[str, Any] = previous or {}
    changes: dict[str, Any] = {}
    for key, old in before.items():
        if key not in current:
            changes[key] = {"from": old, "to": None}
        elif not same(old, current[key]):
            changes[key] = {"from": old, "to": current[key]}
    for key, new in current.items():
        if key not in before:
            changes[key] = {"from": None, "to": new}
    return changes
