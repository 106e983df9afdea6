"""JetStream publish with dedup headers, a time budget, classified retries and backoff.

Transient failures (no responder, timeouts, 5xx API errors, a lost connection) are retried
with exponential backoff and jitter inside ``publish_timeout``; each attempt gets a share of
the remaining budget so one hung attempt cannot use it all. Re-sending is safe because the
``Nats-Msg-Id`` makes JetStream drop a second copy.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from nats.errors import ConnectionClosedError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

from ensemble_tap.bus.connection import Broker
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics

MAX_BACKOFF = 2.0
MIN_ATTEMPT_TIMEOUT = 0.5
# JetStream error codes that are not worth retrying although their status is 5xx/4xx.
_STREAM_FULL = {10077}  # store failed: maximum messages or bytes exceeded (discard new)
_RETRYABLE_4XX = {409, 429}


class PublishError(Exception):
    """The message was not stored. ``unavailable`` means the broker could not be reached."""

    def __init__(self, message: str, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(slots=True, frozen=True)
class PublishResult:
    stream: str
    sequence: int
    duplicate: bool


class Publisher:
    def __init__(self, broker: Broker, config: NatsConfig, metrics: Metrics) -> None:
        self.broker = broker
        self.config = config
        self.metrics = metrics

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        request_id: str = "",
        timeout: float | None = None,
    ) -> PublishResult:
        """Store ``payload`` on ``subject`` once; raise PublishError when that fails."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else {}
        if request_id:
            headers["X-Request-ID"] = request_id
        budget = self.config.publish_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        attempts = self.config.publish_max_retries + 1
        last_error = "publish budget exhausted"
        unavailable = False
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not await self.broker.wait_connected(remaining):
                raise PublishError("nats not connected", unavailable=True)
            remaining = deadline - time.monotonic()
            left = attempts - attempt
            attempt_timeout = min(remaining, max(remaining / left, MIN_ATTEMPT_TIMEOUT))
            try:
                ack = await self.broker.js.publish(
                    subject, payload, timeout=attempt_timeout, headers=headers or None
                )
            except APIError as exc:
                reason = _retry_reason(exc)
                last_error = f"publish nats message: {exc.description or exc}"
                unavailable = False
                if reason is None:
                    raise PublishError(last_error, unavailable=False) from exc
            except (NoStreamResponseError, NatsTimeoutError, TimeoutError) as exc:
                reason = "transport"
                last_error = f"publish nats message: {type(exc).__name__}"
                unavailable = True
            except (ConnectionClosedError, OutboundBufferLimitError, OSError) as exc:
                reason = "transport"
                last_error = f"publish nats message: {exc or type(exc).__name__}"
                unavailable = True
            else:
                return PublishResult(ack.stream, ack.seq, bool(ack.duplicate))
            if attempt == attempts - 1:
                break
            delay = _backoff(self.config.publish_retry_backoff, attempt)
            if time.monotonic() + delay >= deadline:
                break
            self.metrics.publish_retries.labels(reason).inc()
            self.metrics.publish_retry_delay.observe(delay)
            await asyncio.sleep(delay)
        raise PublishError(last_error, unavailable=unavailable)


def _retry_reason(exc: APIError) -> str | None:
    """The retry label for a JetStream API error, or None when retrying cannot help."""
    code = exc.code or 0
    if exc.err_code in _STREAM_FULL:
        return None
    if code >= 500:
        return "api_5xx"
    if code in _RETRYABLE_4XX:
        return "api_4xx"
    return None


def _backoff(base: float, attempt: int) -> float:
    """``base * 2^attempt`` capped at 2 s, with jitter in [50%, 100%] against herds."""
    delay = min(base * (2**attempt), MAX_BACKOFF)
    return float(delay * (0.5 + random.random() / 2))
