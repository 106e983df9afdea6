"""Go-style durations: parse_duration (text → seconds) and format_duration (Go's String())."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_tap.config import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("168h", 604_800.0),
        ("7d", 604_800.0),
        ("1d12h", 129_600.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("+0", 0.0),
        ("-0", 0.0),
        ("2m", 120.0),
        ("100ms", 0.1),
        ("1ns", 1e-9),
        ("1us", 1e-6),
        ("1µs", 1e-6),  # U+00B5 MICRO SIGN
        ("1μs", 1e-6),  # U+03BC GREEK SMALL LETTER MU
        (".5s", 0.5),
        ("1.s", 1.0),
        ("2h45m30.5s", 9930.5),
        ("1h0m0s", 3600.0),
        ("1m1m", 120.0),  # Go sums repeated units
        ("+5s", 5.0),
        ("-1.5h", -5400.0),
        ("  5s  ", 5.0),
    ],
)
def test_parse_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "text",
    [
        "5",  # a bare number is rejected (the reference read it as nanoseconds)
        "60",
        "1.5",
        "-5",
        "s",
        "ms",
        ".",
        ".s",
        "5x",
        "5S",  # units are case-sensitive, like Go
        "1H",
        "1h 30m",
        "1e3s",
        "--5s",
        "+-5s",
        "5s5",
        "h5",
        "5 s",
        "1w",
        "PT5S",
        "five seconds",
        "0x10s",
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    assert "unit" in str(info.value)


@pytest.mark.parametrize("text", ["", "   "])
def test_parse_empty(text: str) -> None:
    with pytest.raises(ValueError, match="duration is empty"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0, "0s"),
        (-0.0, "0s"),
        (90, "1m30s"),
        (0.5, "500ms"),
        (86_400, "24h0m0s"),
        (604_800, "168h0m0s"),
        (3600, "1h0m0s"),
        (3661.5, "1h1m1.5s"),
        (60, "1m0s"),
        (120, "2m0s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (5.000000001, "5.000000001s"),
        (0.1, "100ms"),
        (0.001, "1ms"),
        (0.0015, "1.5ms"),
        (1e-6, "1µs"),
        (1.5e-6, "1.5µs"),
        (1e-9, "1ns"),
        (999e-9, "999ns"),
        (4e-10, "0s"),  # below a nanosecond rounds to zero
        (-1.5, "-1.5s"),
        (-90, "-1m30s"),
        (-0.5, "-500ms"),
        (90_000.001, "25h0m0.001s"),
        (1_099_511_627_776, "305419896h36m16s"),
    ],
)
def test_format_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_uses_micro_sign() -> None:
    assert format_duration(2e-6) == "2\u00b5s"


@pytest.mark.parametrize("text", ["5s", "1h30m", "1.5s", "500ms", "168h", "1m30s", "250µs", "7ns"])
def test_round_trip_of_canonical_text(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == pytest.approx(
        parse_duration(text)
    )


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_round_trip_whole_nanoseconds(nanos: int) -> None:
    seconds = nanos / 1e9
    text = format_duration(seconds)
    assert round(parse_duration(text) * 1e9) == nanos
