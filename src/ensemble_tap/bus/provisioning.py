"""Setting up the JetStream resources a process needs at start (the streams, the sink's
consumer, buckets), retried until they exist.

Replicas started together against a cluster that is still electing its JetStream meta
leader, a stream whose peers are not all back yet, siblings creating the same stream at the
same moment: all of these answer "not yet" (a timeout, no responders, a 503, no peers for
placement), and waiting is the cure. Only a refusal of the configuration itself
(``SetupRefused``: overlapping subjects, a change nats-server cannot apply, a push consumer
where the sink needs a pull one) ends the set-up, because waiting does not change it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ensemble_tap.observability import get_logger

T = TypeVar("T")
log = get_logger("ensemble_tap.bus")

# JetStream API error codes (nats-server's errors.json) that mean "not now" although their
# HTTP-like code is not 503: no suitable peers for placement (a node not back yet), the
# cluster's not-assigned / not-leader / RAFT / assignment errors, and a stream or consumer
# offline while its peers recover. Every code 503 (temporarily unavailable, insufficient
# resources, JetStream not enabled yet) means "not now" too.
NOT_YET_ERR_CODES = frozenset({10005, 10007, 10009, 10041, 10048, 10118, 10119})


class SetupRefused(RuntimeError):
    """JetStream refused a resource's configuration: retrying cannot help."""


def not_yet(code: int | None, err_code: int | None) -> bool:
    """Whether a JetStream API error is one that waiting cures (see NOT_YET_ERR_CODES)."""
    return code == 503 or err_code in NOT_YET_ERR_CODES


@dataclass(slots=True, frozen=True)
class Backoff:
    """Pauses between attempts: ``first``, doubling up to ``ceiling``, each drawn between
    half and all of it so that replicas started together spread their retries."""

    first: float
    ceiling: float

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield random.uniform(delay / 2, delay)  # jitter, not a secret  # nosec B311
            delay = min(delay * 2, self.ceiling)


async def until_set_up(
    step: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    report: Callable[[str], None],
) -> T:
    """Run ``step`` until it succeeds and return its result. ``SetupRefused`` (and
    cancellation) end it; any other error is reported (``report``: for ``/readyz``) and
    retried after the next pause. The caller bounds the whole (``nats.startup_timeout``)."""
    delays = backoff.delays()
    while True:
        try:
            return await step()
        except SetupRefused:
            raise
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            report(f"setting up {what}: {reason}")
            log.warning("jetstream set-up failed: retrying", resource=what, error=reason)
        await asyncio.sleep(next(delays))
