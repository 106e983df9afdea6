"""Times typed into the console's filters (console/times.py): a ``datetime-local`` value is in
the browser's zone (the offset its script sends), an RFC 3339 value carries its own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ensemble_tap.console.context import Refused
from ensemble_tap.console.render import seconds
from ensemble_tap.console.times import instant, parsed, rfc3339


def test_a_local_time_is_moved_by_the_browsers_offset() -> None:
    # getTimezoneOffset() is -60 in Paris in winter: local 10:00 is 09:00 UTC.
    assert instant("2026-12-04T10:00", "-60", "since") == datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    assert instant("2026-12-04T10:00", "", "since") == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("offset", ["abc", "100000"])
def test_an_offset_that_cannot_be_one_counts_as_utc(offset: str) -> None:
    assert instant("2026-12-04T10:00", offset, "since") == datetime(2026, 12, 4, 10, tzinfo=UTC)


def test_an_rfc3339_time_keeps_its_own_zone_and_blank_is_none() -> None:
    assert instant("2026-12-04T10:00:00+02:00", "-60", "until") == datetime(
        2026, 12, 4, 8, tzinfo=UTC
    )
    assert instant("2026-12-04T10:00:00Z", "300", "until") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert instant("  ", "0", "until") is None


def test_an_unreadable_time_is_refused_with_the_fields_name() -> None:
    with pytest.raises(Refused) as info:
        instant("yesterday", "0", "since")
    assert "since: not a time ('yesterday')" in str(info.value)


def test_times_are_written_and_read_as_rfc3339() -> None:
    moment = datetime(2026, 12, 4, 10, 0, 0, 123000, tzinfo=UTC)
    assert rfc3339(moment) == "2026-12-04T10:00:00.123Z"
    assert rfc3339(None) == ""
    assert parsed("2026-12-04T10:00:00.123Z") == moment
    assert parsed("2026-12-04T10:00:00") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert parsed("not a time") is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "—"), ("", "—"), (42, "42 s"), (600, "10 min"), (9000, "2.5 h"), (23_885_000, "276 d")],
)
def test_durations_read_as_an_operator_says_them(value: float | str | None, shown: str) -> None:
    assert seconds(value) == shown
