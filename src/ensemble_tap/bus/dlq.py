"""Dead-letter records: what failed, where, and (when it is safe to keep) the payload.

Records go to stream ``<stream>_DLQ`` on ``ensemble.dlq.<stage>.<provider>``. A record of an
unauthenticated request (stage ``verify``) keeps only request metadata and a SHA-256 of the
body, and such records are rate-limited per provider so anonymous traffic cannot fill the
stream. A record that cannot be written is logged and counted, never silently dropped.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ensemble_tap.bus.contract import Publisher, PublishError
from ensemble_tap.events import format_time_ns, subject_token
from ensemble_tap.observability import Metrics, get_logger

DLQ_SUBJECT_PREFIX = "ensemble.dlq"
WRITE_TIMEOUT = 2.0
VERIFY_RATE_PER_SEC = 5.0
VERIFY_BURST = 20
# Headers that carry credentials are never stored.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-admin-token"})
log = get_logger("ensemble_tap.dlq")


@dataclass(slots=True)
class DeadLetter:
    stage: str
    provider: str
    reason: str
    tenant_id: str = ""
    request_id: str = ""
    original_subject: str = ""
    original_dedup_id: str = ""
    original_payload: bytes = b""
    payload_sha256: str = ""
    request_meta: dict[str, Any] = field(default_factory=dict)

    def record_id(self) -> str:
        payload_hash = self.payload_sha256 or hashlib.sha256(self.original_payload).hexdigest()
        text = "|".join(
            (
                self.stage,
                self.provider,
                self.tenant_id,
                self.reason,
                self.original_subject,
                self.original_dedup_id,
                payload_hash,
            )
        )
        return "dlq_" + hashlib.sha256(text.encode()).hexdigest()

    def to_json(self, occurred_ns: int) -> bytes:
        record: dict[str, Any] = {
            "id": self.record_id(),
            "stage": self.stage or "unknown",
            "provider": self.provider or "unknown",
        }
        if self.tenant_id:
            record["tenant_id"] = self.tenant_id
        if self.request_id:
            record["request_id"] = self.request_id
        record["reason"] = self.reason
        if self.original_subject:
            record["original_subject"] = self.original_subject
        if self.original_dedup_id:
            record["original_dedup_id"] = self.original_dedup_id
        if self.original_payload:
            record["original_payload"] = base64.b64encode(self.original_payload).decode()
        if self.payload_sha256:
            record["payload_sha256"] = self.payload_sha256
        if self.request_meta:
            record["request_meta"] = self.request_meta
        record["occurred_at"] = format_time_ns(occurred_ns)
        return orjson.dumps(record)


def dlq_subject(stage: str, provider: str) -> str:
    return f"{DLQ_SUBJECT_PREFIX}.{subject_token(stage)}.{subject_token(provider)}"


def request_metadata(
    method: str, path: str, headers: Mapping[str, str], remote_addr: str
) -> dict[str, Any]:
    """What an operator needs to understand a failed request, without credentials."""
    return {
        "method": method,
        "path": path,
        "remote_addr": remote_addr,
        "headers": {k: v for k, v in headers.items() if k not in _SECRET_HEADERS},
    }


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class DeadLetterWriter:
    def __init__(self, publisher: Publisher, metrics: Metrics) -> None:
        self.publisher = publisher
        self.metrics = metrics
        self._verify_buckets: dict[str, TokenBucket] = {}

    async def write(self, letter: DeadLetter, timeout: float = WRITE_TIMEOUT) -> bool:
        """Store ``letter``; return False (logged and counted) when it could not be stored."""
        if letter.stage == "verify" and not self._allow_verify(letter.provider):
            self.metrics.dlq_dropped.labels(letter.stage).inc()
            return False
        record_id = letter.record_id()
        body = letter.to_json(time.time_ns())
        try:
            await self.publisher.publish(
                dlq_subject(letter.stage, letter.provider),
                body,
                msg_id=record_id,
                request_id=letter.request_id,
                timeout=timeout,
            )
        except PublishError as exc:
            self.metrics.dlq_write_failures.labels(letter.stage).inc()
            log.error(
                "dead-letter write failed",
                stage=letter.stage,
                provider=letter.provider,
                request_id=letter.request_id,
                record_id=record_id,
                error=str(exc),
            )
            return False
        self.metrics.dlq_records.labels(letter.stage).inc()
        return True

    def _allow_verify(self, provider: str) -> bool:
        bucket = self._verify_buckets.get(provider)
        if bucket is None:
            bucket = self._verify_buckets[provider] = TokenBucket(VERIFY_RATE_PER_SEC, VERIFY_BURST)
        return bucket.take()
