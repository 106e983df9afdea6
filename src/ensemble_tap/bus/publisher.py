"""JetStream publish with dedup headers, a time budget, classified retries and backoff.

Transient failures (no responder, timeouts, 5xx API errors, a lost connection) are retried
with exponential backoff and jitter inside ``publish_timeout``; each attempt gets a share of
the remaining budget so one hung attempt cannot use it all. Re-sending is safe because the
``Nats-Msg-Id`` makes JetStream drop a second copy.

Acks come back on one wildcard reply subscription and are matched to their publish by a
token (what nats.go calls async publish): half the CPU of nats-py's request-per-message
``js.publish``, which is the largest cost on the webhook path.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import orjson
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    MaxPayloadError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

from ensemble_tap.bus.client import encode_headers
from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.contract import Failure, PublishError, PublishResult
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics

NO_RESPONDERS = b"NATS/1.0 503"  # the status line of a no-responders reply
MAX_BACKOFF = 2.0
MIN_ATTEMPT_TIMEOUT = 0.5
# JetStream error codes that are not worth retrying although their status is 5xx/4xx.
_STREAM_FULL = {10077}  # store failed: maximum messages or bytes exceeded (discard new)
_RETRYABLE_4XX = {409, 429}


class JetStreamPublisher:
    """The ``bus.contract.Publisher`` of the service: JetStream over the process's one
    connection. nats-py's exceptions stop here, classified as a ``Failure``."""

    def __init__(self, broker: Broker, config: NatsConfig, metrics: Metrics) -> None:
        self.broker = broker
        self.config = config
        self.metrics = metrics
        self._router: AckRouter | None = None
        self._router_lock = asyncio.Lock()

    async def _start_router(self) -> AckRouter:
        async with self._router_lock:
            if self._router is None:
                router = AckRouter(self.broker)
                await router.subscribe()
                self._router = router
            return self._router

    @property
    def connected(self) -> bool:
        return self.broker.is_connected

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
        header_block = encode_headers(headers)
        budget = self.config.publish_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        attempts = self.config.publish_max_retries + 1
        last_error = "publish budget exhausted"
        failure = Failure.REFUSED
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not self.broker.is_connected and not await self.broker.wait_connected(remaining):
                raise PublishError("nats not connected", Failure.UNAVAILABLE)
            remaining = deadline - time.monotonic()
            left = attempts - attempt
            attempt_timeout = min(remaining, max(remaining / left, MIN_ATTEMPT_TIMEOUT))
            try:
                router = self._router or await self._start_router()
                ack = await router.publish(subject, payload, header_block, attempt_timeout)
            except MaxPayloadError as too_large:  # one name per clause (mypyc)
                raise PublishError(
                    f"publish nats message: {len(payload)} bytes with headers exceed the "
                    f"server's max_payload of {self.broker.nc.max_payload} bytes",
                    Failure.TOO_LARGE,
                ) from too_large
            except BadSubjectError as bad_subject:
                raise PublishError(
                    f"publish nats message: subject of {len(subject)} bytes is too long",
                    Failure.PERMANENT,
                ) from bad_subject
            except APIError as refused:
                reason = _retry_reason(refused)
                last_error = f"publish nats message: {refused.description or refused}"
                failure = Failure.REFUSED
                if reason is None:
                    raise PublishError(last_error, Failure.PERMANENT) from refused
            except (NoStreamResponseError, NatsTimeoutError, TimeoutError) as unanswered:
                reason = "transport"
                last_error = f"publish nats message: {type(unanswered).__name__}"
                failure = Failure.UNAVAILABLE
            except (ConnectionClosedError, OutboundBufferLimitError, OSError) as lost:
                reason = "transport"
                last_error = f"publish nats message: {lost or type(lost).__name__}"
                failure = Failure.UNAVAILABLE
            else:
                return ack
            if attempt == attempts - 1:
                break
            delay = _backoff(self.config.publish_retry_backoff, attempt)
            if time.monotonic() + delay >= deadline:
                break
            self.metrics.publish_retries.labels(reason).inc()
            self.metrics.publish_retry_delay.observe(delay)
            await asyncio.sleep(delay)
        raise PublishError(last_error, failure)


class AckRouter:
    """Publishes with a reply subject ``<inbox>.<token>`` and resolves the publish's future
    when JetStream's ack (or a no-responders status) arrives on the one subscription, whose
    messages the client hands over directly (bus/client.py)."""

    def __init__(self, broker: Broker) -> None:
        self.nc = broker.nc
        self.prefix = (broker.nc.new_inbox() + ".").encode()
        self._pending: dict[bytes, asyncio.Future[PublishResult]] = {}
        self._tokens = itertools.count()

    async def subscribe(self) -> None:
        await self.nc.subscribe_direct(self.prefix.decode() + "*", self._on_reply)

    async def publish(
        self, subject: str, payload: bytes, headers: bytes, timeout: float
    ) -> PublishResult:
        loop = asyncio.get_running_loop()
        token = b"%d" % next(self._tokens)
        future: asyncio.Future[PublishResult] = loop.create_future()
        self._pending[token] = future
        expiry = loop.call_later(timeout, self._expire, token)
        try:
            if self.nc.queue_frame(subject.encode(), self.prefix + token, headers, payload):
                await self.nc.flush_queued()
            return await future
        finally:
            expiry.cancel()
            self._pending.pop(token, None)

    def _expire(self, token: bytes) -> None:
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            future.set_exception(NatsTimeoutError())

    def _on_reply(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        future = self._pending.pop(subject[len(self.prefix) :], None)
        if future is None or future.done():
            return  # a late ack of a publish that already timed out
        if headers and headers.startswith(NO_RESPONDERS):
            future.set_exception(NoStreamResponseError())
            return
        try:
            ack = orjson.loads(data)
            error = ack.get("error")
            if error is None:
                result = PublishResult(
                    str(ack["stream"]), int(ack["seq"]), bool(ack.get("duplicate"))
                )
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            future.set_exception(APIError(description="invalid JetStream ack"))
            return
        if error is None:
            future.set_result(result)
            return
        future.set_exception(
            APIError(
                code=error.get("code"),
                err_code=error.get("err_code"),
                description=error.get("description"),
            )
        )


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
    # Jitter for waits, not a secret: the standard generator is right here.
    return float(delay * (0.5 + random.random() / 2))  # nosec B311
