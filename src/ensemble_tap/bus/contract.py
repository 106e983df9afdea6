"""What the rest of the service may rely on when it publishes: the ``Publisher`` protocol, its
result and its one error, whose ``failure`` says what the caller should do.

Ingress, the poll engine, replay, the spool and the dead-letter writer depend on this module
only; ``bus/publisher.py`` (JetStream) is the implementation the app builds, and tests use an
in-memory one (``tests/support/publisher.py``). No caller inspects a nats-py exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Failure(enum.Enum):
    """Why a publish failed, as far as a caller needs to know."""

    # The broker was not reached or did not answer in time; nothing was refused, so the
    # same event may be stored later. Webhooks: 503 + Retry-After (or the spool).
    UNAVAILABLE = "unavailable"
    # The broker refused it with a code that may clear (JetStream 5xx, 409, 429) and the
    # retries ran out. Webhooks: dead letter and 500; the poller publishes it again later.
    REFUSED = "refused"
    # The broker refuses this event for good (stream full with discard new, message past
    # the stream's size, a subject it cannot take). Dead-letter it: webhooks answer 500.
    PERMANENT = "permanent"
    # Permanent: past the server's max_payload (headers count), so it was never sent (the
    # server would close the connection). The dead letter cannot hold it either: it keeps
    # the digest. Webhooks answer 413.
    TOO_LARGE = "too_large"


class PublishError(Exception):
    """The event was not stored; ``failure`` says why (see ``Failure``)."""

    def __init__(self, message: str, failure: Failure) -> None:
        super().__init__(message)
        self.failure = failure

    @property
    def unavailable(self) -> bool:
        """Nothing was refused: retrying (or spooling) the same event may succeed."""
        return self.failure is Failure.UNAVAILABLE

    @property
    def permanent(self) -> bool:
        """Refused for good: retrying the same event cannot help."""
        return self.failure in (Failure.PERMANENT, Failure.TOO_LARGE)

    @property
    def too_large(self) -> bool:
        return self.failure is Failure.TOO_LARGE


@dataclass(init=False)
class PublishResult:
    stream: str
    sequence: int
    duplicate: bool  # published before: JetStream dropped this copy (same ``Nats-Msg-Id``)

    # Written out (init=False): mypyc compiles this one, not dataclass's generated __init__.
    def __init__(
        self,
        stream: str,
        sequence: int,
        duplicate: bool,
    ) -> None:
        self.stream = stream
        self.sequence = sequence
        self.duplicate = duplicate


class Publisher(Protocol):
    """Stores events exactly once (per ``msg_id``) in the event broker."""

    @property
    def connected(self) -> bool:
        """False while the connection to the broker is down: a publish would wait for it."""
        ...

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        request_id: str = "",
        timeout: float | None = None,
    ) -> PublishResult:
        """Store ``payload`` on ``subject`` once (``msg_id`` deduplicates); raise
        PublishError when that fails. ``timeout`` overrides the configured budget."""
        ...
