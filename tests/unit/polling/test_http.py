"""The common HTTP layer: Retry-After, URL checks, budgets, pacing (docs/polling.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from ensemble_tap.poller.errors import BudgetExhausted, PollError, RateLimited
from ensemble_tap.poller.http import FetchBudget, TokenBucket, check_url, retry_after_seconds
from tests.support.polling import FakeClock

NOW = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)
NOW_NS = int(NOW.timestamp()) * 1_000_000_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("120", 120.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 2.0),
        ("0", 2.0),
        ("-5", 2.0),
        ("soon", 2.0),
        ("", 2.0),
        (None, 2.0),
    ],
)
def test_retry_after(value: str | None, expected: float) -> None:
    assert retry_after_seconds(value, NOW_NS) == pytest.approx(expected)


def test_rate_limited_message() -> None:
    assert str(RateLimited("notion", 3)) == "notion rate limited; retry after 3s"
    assert str(RateLimited("", 90)) == "rate limited; retry after 1m30s"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://api.example.com/v1/data", None),
        ("http://127.0.0.1:8080/health", None),
        ("https:///path", "missing URL host"),
        ("ftp://example.com/path", 'unsupported URL scheme "ftp"'),
        ("https://user:pass@example.com/path", "URL userinfo is not allowed"),
    ],
)
def test_url_checks(url: str, error: str | None) -> None:
    if error is None:
        check_url(url)
    else:
        with pytest.raises(PollError, match=error):
            check_url(url)


def test_budget_counts_requests_and_pages() -> None:
    budget = FetchBudget(2, 0)
    assert (budget.max_pages, budget.max_requests) == (2, 400)  # 0: the default
    budget.take_request()
    budget.page_done()
    budget.take_request()
    budget.page_done()
    with pytest.raises(BudgetExhausted):
        budget.take_request()
    assert (budget.requests, budget.pages) == (2, 2)
    tight = FetchBudget(0, 1)
    tight.take_request()
    with pytest.raises(BudgetExhausted):
        tight.take_request()


async def test_token_bucket_paces_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 2, clock)
    for _ in range(6):
        await bucket.acquire()
    # Two at once (the burst), then one every 250 ms.
    assert clock.monotonic() == pytest.approx(1.0)
