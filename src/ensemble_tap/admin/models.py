"""JSON shapes of the admin API, for the OpenAPI document (docs/admin-openapi.yaml).

Handlers build plain dicts (see ``Job.to_json``); these models describe them. Optional
fields are left out of responses when unset.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ensemble_tap.admin.jobs import JobStatus


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdminError(Model):
    request_id: str
    error: str


class RecordFailure(Model):
    record_id: str
    sequence: str
    error: str


class ReplayJob(Model):
    job_id: str
    status: JobStatus
    requested_limit: int | None = None
    effective_limit: int
    max_limit: int
    capped: bool
    dry_run: bool
    provider: str | None = Field(None, description="replay only records of this provider")
    stage: str | None = Field(None, description="replay only records of this stage")
    tenant: str | None = Field(None, description="replay only records of this tenant")
    sequence: int | None = Field(None, description="replay only the record at this sequence")
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    replayed: int = Field(description="records delivered to the main stream")
    skipped: int = Field(description="records that are not replayable (e.g. stage verify)")
    failed: int = Field(description="records that kept failing and stay in the DLQ")
    would_replay: int | None = Field(None, description="dry run: records a real run delivers")
    failures: list[RecordFailure] | None = None
    request_id: str | None = None
    operator_reason: str | None = None
    cancel_reason: str | None = None
    error: str | None = None


class ReplayJobEnvelope(Model):
    request_id: str
    idempotency_reused: bool | None = None
    job: ReplayJob


class JobSummary(Model):
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class ReplayJobListResponse(Model):
    request_id: str
    status: str
    limit: int
    cursor: str
    next_cursor: str
    count: int
    summary: JobSummary
    jobs: list[ReplayJob]


class DeadLetterRecord(Model):
    id: str
    sequence: int
    stage: str
    provider: str
    tenant_id: str
    request_id: str
    reason: str
    original_subject: str
    occurred_at: str
    replayable: bool
    original_payload: str | None = Field(None, description="base64, with include_payload=true")


class RequestMeta(Model):
    model_config = ConfigDict(extra="allow")
    method: str | None = None
    path: str | None = None
    remote_addr: str | None = None
    headers: dict[str, str] | None = Field(None, description="credentials are never stored")


class DeadLetterDetail(DeadLetterRecord):
    original_payload_text: str | None = Field(None, description="the payload, when UTF-8")
    original_dedup_id: str | None = None
    payload_sha256: str | None = None
    request_meta: RequestMeta | None = Field(
        None, description="the webhook request (webhook stages)"
    )


class DeadLetterDetailResponse(Model):
    request_id: str
    record: DeadLetterDetail


class DeadLetterListResponse(Model):
    request_id: str
    records: list[DeadLetterRecord]
    next_cursor: str
    summary: dict[str, int] = Field(description="records per stage")


class PollerStatus(Model):
    provider: str
    tenant_id: str | None = None
    interval: str
    rate_limit_per_sec: float
    burst: int
    failure_budget: int
    circuit_break_duration: str
    jitter_ratio: float
    last_run_at: str | None = None
    last_success_at: str | None = None
    last_error_at: str | None = None
    last_error: str | None = None
    last_checkpoint: str | None = None
    consecutive_failures: int
    stuck: bool | None = Field(None, description="failure budget used up, or no success lately")
    circuit: Literal["closed", "open", "half_open"] | None = None
    next_run_at: str | None = None
    checkpoints: dict[str, str] | None = Field(None, description="checkpoint per stream")
    checkpoint_lag_seconds: float | None = None
    last_cycle: dict[str, Any] | None = Field(None, description="counts of the last cycle")
    lease_holder: str | None = Field(
        None, description="state.backend nats: the replica polling the target (null: none)"
    )
    lease_since: str | None = Field(None, description="since when lease_holder holds it")
    paused: bool | None = Field(None, description="an operator paused it (POST …/pause)")
    paused_since: str | None = None
    paused_by: str | None = Field(None, description="the admin token slot that paused it")
    pause_reason: str | None = None
    cycle_running: bool | None = Field(None, description="a cycle is in flight")


class PollerStatusResponse(Model):
    generated_at: str
    request_id: str
    provider: str
    tenant: str
    count: int
    pollers: list[PollerStatus]


class MetricsHistoryResponse(Model):
    generated_at: str
    request_id: str
    resolution_seconds: float
    span_seconds: float
    series: list[str] = Field(description="the series a point may hold, in display order")
    points: list[dict[str, float | str]] = Field(
        description="oldest first: `time` (RFC 3339) and each series known then (rates per "
        "second over the interval; an unknown value, such as the first rate, is left out)"
    )


class PollerControlResponse(Model):
    request_id: str
    action: Literal["run", "pause", "resume", "reset"]
    result: dict[str, Any] = Field(
        description="run: scheduled, after_running_cycle; pause: cycle_running (it finishes); "
        "reset: checkpoints_removed"
    )
    poller: PollerStatus = Field(description="the target's status after the action")


class EventListResponse(Model):
    request_id: str
    events: list[dict[str, Any]] = Field(
        description="rows of the events table: id, type, source, subject, time, provider, "
        "entity_type, entity_id, action, changes, snapshot, provider_event_id, tenant_id, "
        "request_id, received_at"
    )
    next_cursor: str
