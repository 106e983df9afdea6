"""Times typed into the console's filters: ``datetime-local`` values in the browser's zone
(the offset the page's script puts in ``tz``; UTC without script) or RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ensemble_tap.console.context import Refused


def instant(text: str, tz_offset: str, name: str) -> datetime | None:
    """``text`` as a UTC time; ``tz_offset`` is JavaScript's ``getTimezoneOffset()``
    (minutes to add to local time for UTC). None when blank; Refused (400) when unreadable."""
    value = text.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, f"{name}: not a time ({value[:40]!r})") from None
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    try:
        offset = int(tz_offset or "0")
    except ValueError:
        offset = 0
    if not -24 * 60 <= offset <= 24 * 60:
        offset = 0
    return (moment + timedelta(minutes=offset)).replace(tzinfo=UTC)


def rfc3339(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parsed(text: str) -> datetime | None:
    """An RFC 3339 time the admin API gave (None when absent or unreadable)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
