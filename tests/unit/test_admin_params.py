"""The admin API's value parsers and page cursors, as the reference reads them: each bad
value is a 400 whose text names it."""

from __future__ import annotations

import base64

import pytest

from ensemble_tap.admin import params
from ensemble_tap.admin.calls import AdminFailure
from ensemble_tap.admin.cursors import (
    InvalidCursor,
    decode_sequence_cursor,
    encode_sequence_cursor,
)
from ensemble_tap.config.models import ServerConfig

LOG = "admin test rejected"


def _rejection(failure: pytest.ExceptionInfo[AdminFailure]) -> tuple[int, str, str]:
    return failure.value.status, failure.value.error, failure.value.log_msg


def test_sequence_cursor_round_trip() -> None:
    cursor = encode_sequence_cursor(42)
    assert cursor == base64.urlsafe_b64encode(b"seq|42").decode().rstrip("=")
    assert decode_sequence_cursor(cursor) == 42
    assert params.sequence_cursor(f"  {cursor} ", LOG) == 42
    assert params.sequence_cursor(" ", LOG) is None


@pytest.mark.parametrize(
    ("cursor", "message"),
    [
        ("!!", "invalid cursor: malformed encoding"),
        ("c2VxfDQy=", "invalid cursor: malformed encoding"),  # padding is not handed out
        ("MTJ8am9i", "invalid cursor: malformed payload"),  # "12|job"
        ("c2VxfDA", "invalid cursor: malformed payload"),  # "seq|0"
        ("c2VxfMKy", "invalid cursor: malformed payload"),  # "seq|²"
    ],
)
def test_invalid_sequence_cursors(cursor: str, message: str) -> None:
    with pytest.raises(InvalidCursor, match=message):
        decode_sequence_cursor(cursor)
    with pytest.raises(AdminFailure) as failure:
        params.sequence_cursor(cursor, LOG)
    assert _rejection(failure) == (400, message, LOG)


@pytest.mark.parametrize(
    ("raw", "value"), [(None, 0), ("", 0), (" 7 ", 7), ("+3", 3), (str(2**63 - 1), 2**63 - 1)]
)
def test_positive_int(raw: str | None, value: int) -> None:
    assert params.positive_int(raw, "limit", LOG) == value


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("1_000", 'invalid limit "1_000": must be a positive integer'),
        ("٣", 'invalid limit "٣": must be a positive integer'),
        (str(2**63), f'invalid limit "{2**63}": must be a positive integer'),
        ("0", 'invalid limit "0": must be greater than 0'),
        ("-1", 'invalid limit "-1": must be greater than 0'),
    ],
)
def test_positive_int_rejections(raw: str, error: str) -> None:
    with pytest.raises(AdminFailure) as failure:
        params.positive_int(raw, "limit", LOG)
    assert _rejection(failure) == (400, error, LOG)


def test_booleans_are_read_as_go_reads_them() -> None:
    for raw in ("1", "t", "T", "TRUE", "true", "True", " true "):
        assert params.boolean(raw, LOG) is True
    for absent_or_false in (None, "", "0", "f", "F", "FALSE", "false", "False"):
        assert params.boolean(absent_or_false, LOG) is False
    with pytest.raises(AdminFailure) as failure:
        params.boolean("yes", LOG)
    assert _rejection(failure) == (400, 'invalid boolean "yes"', LOG)


def test_reason_counts_characters_of_the_utf8_the_client_sent() -> None:
    server = ServerConfig(admin_replay_require_reason=True, admin_replay_reason_min_length=4)
    as_received = "réparé".encode().decode("latin-1")  # how ASGI servers hand it over
    assert params.reason(as_received, server, LOG) == "réparé"
    with pytest.raises(AdminFailure) as failure:
        params.reason("éé", server, LOG)
    assert _rejection(failure) == (400, "X-Admin-Reason must be at least 4 characters", LOG)
    with pytest.raises(AdminFailure) as failure:
        params.reason("  ", server, LOG)
    assert _rejection(failure) == (400, "X-Admin-Reason header is required", LOG)
    assert params.reason(None, ServerConfig(), LOG) == ""


def test_instants_need_an_offset() -> None:
    since = params.instant("2026-11-28T10:00:00+01:00", "since", LOG)
    assert since is not None and since.isoformat() == "2026-11-28T09:00:00+00:00"
    assert params.instant(" ", "since", LOG) is None
    with pytest.raises(AdminFailure) as failure:
        params.instant("2026-11-28T10:00:00", "since", LOG)
    assert failure.value.error.startswith('invalid since "2026-11-28T10:00:00": must be')
