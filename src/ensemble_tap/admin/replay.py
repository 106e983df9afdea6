"""Dead-letter replay that one bad record cannot block.

Records are visited oldest first. ``publish``/``poll_publish`` records are republished to their
original subject with their original dedup id; ``normalize`` records are extracted again by the
provider's current code (no secrets needed: they were authenticated when received);
``verify`` and other records are skipped and stay visible in the DLQ. A record whose event is
back in the main stream is removed from the DLQ; one that keeps failing is retried with
backoff a bounded number of times, then left in the DLQ (parked) and reported, and the job
goes on with the next record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ensemble_tap.admin.jobs import MAX_REPORTED_FAILURES, Job
from ensemble_tap.bus.contract import Publisher, PublishError
from ensemble_tap.bus.dlq_store import DeadLetterStore, LetterFilter, StoredLetter
from ensemble_tap.envelopes import envelope_for
from ensemble_tap.events import NormalizeError
from ensemble_tap.observability import get_logger
from ensemble_tap.providers import BadPayload, WebhookRequest, webhook_provider

ATTEMPTS_PER_RECORD = 3
RETRY_BACKOFF = 0.5
# Skipped records do not count against the limit; this bounds how far one job scans.
MAX_SCANNED_PER_JOB = 100_000
log = get_logger("ensemble_tap.admin.replay")


class ReplayRefused(Exception):
    """The record can never be delivered as it is; retrying cannot help."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Redelivery:
    subject: str
    payload: bytes
    dedup_id: str
    request_id: str


class Replayer:
    def __init__(
        self,
        *,
        store: DeadLetterStore,
        publisher: Publisher,
        subject_prefix: str,
        tenant_scoped: bool,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.subject_prefix = subject_prefix
        self.tenant_scoped = tenant_scoped
        # Real replays run one at a time so two jobs never deliver the same record twice.
        self._lock = asyncio.Lock()

    async def dry_run(self, job: Job) -> None:
        """Count what a real run with the same filters would republish (touches nothing)."""
        async for item in self.store.oldest_first(_filter_of(job), _start_of(job)):
            if _past_the_record(job, item):
                return
            if isinstance(item, StoredLetter) and item.replayable:
                job.would_replay += 1
            elif isinstance(item, StoredLetter):
                job.skipped += 1
            job.next_sequence = _sequence_of(item) + 1
            if job.would_replay >= job.effective_limit:
                return

    async def run(self, job: Job, on_progress: Callable[[Job], Awaitable[None] | None]) -> None:
        """Replay from where the job stands (``next_sequence``: a job taken over from a
        replica that stopped goes on after the last record that one reported)."""
        async with self._lock:
            scanned = 0
            async for item in self.store.oldest_first(_filter_of(job), _start_of(job)):
                if _past_the_record(job, item):
                    return
                scanned += 1
                if not isinstance(item, StoredLetter) or not item.replayable:
                    job.skipped += 1
                elif await self._deliver_with_retries(job, item):
                    job.replayed += 1
                else:
                    job.failed += 1
                # With the counters, in the same step: a progress write never holds one
                # without the other.
                job.next_sequence = _sequence_of(item) + 1
                result = on_progress(job)
                if result is not None:
                    await result
                if job.replayed + job.failed >= job.effective_limit:
                    return
                if scanned >= MAX_SCANNED_PER_JOB:
                    return

    async def _deliver_with_retries(self, job: Job, letter: StoredLetter) -> bool:
        error = ""
        for attempt in range(ATTEMPTS_PER_RECORD):
            try:
                for redelivery in self._redeliveries(letter):
                    await self.publisher.publish(
                        redelivery.subject,
                        redelivery.payload,
                        redelivery.dedup_id,
                        redelivery.request_id,
                    )
            except (ReplayRefused, BadPayload, NormalizeError) as exc:
                error = str(exc)
                break  # the record itself is unusable: retrying cannot help
            except PublishError as exc:
                error = str(exc)
                if attempt + 1 < ATTEMPTS_PER_RECORD:
                    await asyncio.sleep(RETRY_BACKOFF * 2**attempt)
                continue
            await self.store.remove(letter.sequence)
            return True
        log.warning(
            "replay record parked",
            job_id=job.job_id,
            record_id=letter.id,
            sequence=letter.sequence,
            stage=letter.stage,
            error=error,
        )
        if len(job.failures) < MAX_REPORTED_FAILURES:
            job.failures.append(
                {"record_id": letter.id, "sequence": str(letter.sequence), "error": error}
            )
        return False

    def _redeliveries(self, letter: StoredLetter) -> list[Redelivery]:
        """What to publish for ``letter``: its stored CloudEvent, or the events extracted again
        from a stored delivery (each with its own dedup id, so a retry re-sends safely)."""
        if letter.stage != "normalize":
            if not letter.original_subject.startswith(self.subject_prefix + "."):
                raise ReplayRefused(
                    f"subject {letter.original_subject!r} is not captured by the event stream "
                    f"({self.subject_prefix}.>)"
                )
            return [
                Redelivery(
                    subject=letter.original_subject,
                    payload=letter.original_payload,
                    dedup_id=letter.original_dedup_id,
                    request_id=letter.request_id,
                )
            ]
        meta = letter.request_meta
        headers = {str(k).lower(): str(v) for k, v in dict(meta.get("headers") or {}).items()}
        request = WebhookRequest(
            method=str(meta.get("method", "POST")),
            scheme="https",
            host=headers.get("host", ""),
            raw_path=str(meta.get("path", "")),
            query_string="",
            headers=headers,
            body=letter.original_payload,
            received_ns=time.time_ns(),
        )
        redeliveries = []
        for found in webhook_provider(letter.provider).extract(request):
            envelope, dedup = envelope_for(
                found,
                letter.provider,
                letter.tenant_id,
                letter.request_id,
                request.received_ns,
                self.subject_prefix,
                self.tenant_scoped,
            )
            redeliveries.append(
                Redelivery(
                    subject=envelope.subject,
                    payload=envelope.body,
                    dedup_id=dedup,
                    request_id=envelope.request_id,
                )
            )
        return redeliveries


def _start_of(job: Job) -> int:
    return max(job.next_sequence, job.sequence, 1)


def _past_the_record(job: Job, item: StoredLetter | tuple[int, bytes]) -> bool:
    """A job for one record (``sequence``) ends at the first record after it (it is gone
    when that is the first one found)."""
    return bool(job.sequence) and _sequence_of(item) != job.sequence


def _sequence_of(item: StoredLetter | tuple[int, bytes]) -> int:
    return item.sequence if isinstance(item, StoredLetter) else item[0]


def _filter_of(job: Job) -> LetterFilter:
    return LetterFilter(stage=job.stage, provider=job.provider, tenant=job.tenant)
