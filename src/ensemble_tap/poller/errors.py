"""The poller's exceptions. ``PollError`` is part of the provider contract (a provider raises
it for an unusable answer); the others are raised by the poller itself."""

from __future__ import annotations

from ensemble_tap.config.durations import format_duration
from ensemble_tap.providers.contract import PollError

__all__ = [
    "AuthError",
    "BudgetExhausted",
    "PollError",
    "PublishUnavailable",
    "RateLimited",
    "UpstreamError",
]


class RateLimited(PollError):
    """The provider asked us to slow down; the scheduler waits ``retry_after`` seconds."""

    def __init__(self, provider: str, retry_after: float) -> None:
        self.provider = provider
        self.retry_after = retry_after
        who = f"{provider} " if provider else ""
        super().__init__(f"{who}rate limited; retry after {format_duration(retry_after)}")


class UpstreamError(PollError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(PollError):
    """No usable token: the refresh failed or none is configured."""


class PublishUnavailable(PollError):
    """NATS could not take the event; the cycle stops and the record is published later."""


class BudgetExhausted(Exception):
    """The cycle's page or request budget is used up; not an error (the pass resumes)."""
