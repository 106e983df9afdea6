"""Reading and removing dead-letter records: the DLQ stream seen as a store.

Records are addressed by stream sequence. Replay removes a record once its event is safely
back in the main stream, so a record still in the DLQ always means "not yet delivered".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from ensemble_tap.bus.dlq import DLQ_SUBJECT_PREFIX
from ensemble_tap.events import subject_token

# Stages whose records hold everything needed to deliver the event again.
REPLAYABLE_STAGES = frozenset({"publish", "poll_publish", "normalize"})
# What a read of the store raises when the stream cannot be reached or does not answer in
# time (the admin API answers 503), so that callers need not know nats-py's exceptions.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (NatsError, TimeoutError, OSError)


@dataclass(slots=True, frozen=True)
class StoredLetter:
    sequence: int
    id: str
    stage: str
    provider: str
    reason: str
    occurred_at: str
    tenant_id: str = ""
    request_id: str = ""
    original_subject: str = ""
    original_dedup_id: str = ""
    original_payload: bytes = b""
    payload_sha256: str = ""
    request_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def replayable(self) -> bool:
        if self.stage not in REPLAYABLE_STAGES or not self.original_payload:
            return False
        if self.stage == "normalize":
            return bool(self.request_meta.get("headers") is not None)
        return bool(self.original_subject)


@dataclass(slots=True, frozen=True)
class LetterFilter:
    stage: str = ""
    provider: str = ""
    tenant: str = ""

    def subject(self) -> str:
        stage = subject_token(self.stage) if self.stage else "*"
        provider = subject_token(self.provider) if self.provider else "*"
        if stage == "*" and provider == "*":
            return f"{DLQ_SUBJECT_PREFIX}.>"
        return f"{DLQ_SUBJECT_PREFIX}.{stage}.{provider}"

    def matches(self, letter: StoredLetter) -> bool:
        return (
            (not self.stage or letter.stage == self.stage)
            and (not self.provider or letter.provider == self.provider)
            and (not self.tenant or letter.tenant_id == self.tenant)
        )


def parse_letter(sequence: int, data: bytes) -> StoredLetter | None:
    """A stored record, or None when the bytes are not a dead-letter record."""
    try:
        record = orjson.loads(data)
        payload = base64.b64decode(record.get("original_payload", ""), validate=True)
    except (orjson.JSONDecodeError, binascii.Error, ValueError, AttributeError, TypeError):
        return None
    if not isinstance(record, dict):
        return None
    meta = record.get("request_meta")
    return StoredLetter(
        sequence=sequence,
        id=str(record.get("id", "")),
        stage=str(record.get("stage", "unknown")),
        provider=str(record.get("provider", "unknown")),
        reason=str(record.get("reason", "")),
        occurred_at=str(record.get("occurred_at", "")),
        tenant_id=str(record.get("tenant_id", "")),
        request_id=str(record.get("request_id", "")),
        original_subject=str(record.get("original_subject", "")),
        original_dedup_id=str(record.get("original_dedup_id", "")),
        original_payload=payload,
        payload_sha256=str(record.get("payload_sha256", "")),
        request_meta=meta if isinstance(meta, dict) else {},
    )


class DeadLetterStore:
    def __init__(self, js: JetStreamContext, stream: str) -> None:
        self.js = js
        self.stream = stream

    async def oldest_first(
        self, letter_filter: LetterFilter, start: int = 1
    ) -> AsyncIterator[StoredLetter | tuple[int, bytes]]:
        """Records matching ``letter_filter`` from sequence ``start`` on; undecodable records
        are yielded as ``(sequence, raw bytes)``."""
        sequence = start
        subject = letter_filter.subject()
        while True:
            try:
                msg = await self.js.get_msg(self.stream, sequence, subject=subject, next=True)
            except NotFoundError:
                return
            seq = msg.seq or sequence
            sequence = seq + 1
            letter = parse_letter(seq, msg.data or b"")
            if letter is None:
                yield seq, msg.data or b""
            elif letter_filter.matches(letter):
                yield letter

    async def depth(self) -> int:
        """Dead letters in the stream now."""
        info = await self.js.stream_info(self.stream)
        return int(info.state.messages)

    async def newest_first(
        self, letter_filter: LetterFilter, before: int | None, limit: int, max_probes: int
    ) -> tuple[list[StoredLetter], int | None]:
        """Up to ``limit`` records below sequence ``before``, newest first, and the sequence to
        continue from (None when nothing older is left). At most ``max_probes`` sequence
        numbers are looked at per call, so a sparse DLQ cannot make one request slow."""
        info = await self.js.stream_info(self.stream)
        first, last = info.state.first_seq, info.state.last_seq
        sequence = min(last, before - 1) if before else last
        found: list[StoredLetter] = []
        probes = 0
        while sequence >= max(first, 1) and len(found) < limit and probes < max_probes:
            probes += 1
            try:
                msg = await self.js.get_msg(self.stream, sequence)
            except NotFoundError:
                sequence -= 1
                continue
            letter = parse_letter(sequence, msg.data or b"")
            if letter is not None and letter_filter.matches(letter):
                found.append(letter)
            sequence -= 1
        return found, (sequence + 1 if sequence >= max(first, 1) else None)

    async def at_sequence(self, sequence: int) -> StoredLetter | None:
        """The record stored at ``sequence`` (None: gone, or not a dead-letter record)."""
        if not 1 <= sequence < 2**63:  # no such sequence (JetStream would answer 400)
            return None
        try:
            msg = await self.js.get_msg(self.stream, sequence)
        except NotFoundError:
            return None
        return parse_letter(sequence, msg.data or b"")

    async def newest_with_id(self, record_id: str, max_probes: int) -> StoredLetter | None:
        """The newest record whose ``id`` is ``record_id``, among the newest ``max_probes``
        sequences (a record id is a content hash: the same failure again has the same id)."""
        info = await self.js.stream_info(self.stream)
        first, sequence = max(info.state.first_seq, 1), info.state.last_seq
        for _ in range(max_probes):
            if sequence < first:
                return None
            letter = await self.at_sequence(sequence)
            if letter is not None and letter.id == record_id:
                return letter
            sequence -= 1
        return None

    async def counts_by_stage(self, letter_filter: LetterFilter) -> dict[str, int]:
        """Record counts per stage (from the stream's per-subject counts)."""
        info = await self.js.stream_info(self.stream, subjects_filter=letter_filter.subject())
        counts: dict[str, int] = {}
        for subject, count in (info.state.subjects or {}).items():
            parts = subject.split(".")
            if len(parts) >= 4:
                counts[parts[2]] = counts.get(parts[2], 0) + int(count)
        return counts

    async def remove(self, sequence: int) -> None:
        # Already gone is fine: a concurrent replay on another replica removed it.
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(self.stream, sequence)
