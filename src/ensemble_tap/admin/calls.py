"""One admin call: its identity, its audit line and metric observation, and its JSON answer.

Every admin request ends in exactly one ``Call.respond`` or ``Call.fail``: one audit log line,
one ``tap_admin_requests_total`` count and one duration observation, and a JSON body with the
request id (also in ``X-Request-ID``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from ensemble_tap.admin.guards import Principal
from ensemble_tap.observability import Metrics, get_logger

OUTCOMES = {
    503: "unavailable",
    200: "success",
    202: "success",
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    429: "rate_limited",
}
log = get_logger("ensemble_tap.admin")


class AdminFailure(Exception):
    """Stop handling the call and answer ``{"request_id", "error"}`` with ``status``."""

    def __init__(
        self, status: int, error: str, log_msg: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.log_msg = log_msg
        self.headers = headers or {}
        self.fields: dict[str, Any] = {}


@dataclass(slots=True, kw_only=True)
class Call:
    """One admin request: its identity, audit fields and timing."""

    request: Request
    metrics: Metrics
    request_id: str
    endpoint: str
    requester_ip: str
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None

    def respond(self, status: int, body: dict[str, Any], log_msg: str, **fields: Any) -> Response:
        self.audit(status, log_msg, fields)
        return json_response(status, {"request_id": self.request_id, **body}, self.request_id)

    def fail(self, failure: AdminFailure) -> Response:
        self.audit(failure.status, failure.log_msg, failure.fields)
        response = json_response(
            failure.status, {"request_id": self.request_id, "error": failure.error}, self.request_id
        )
        response.headers.update(failure.headers)
        return response

    def audit(self, status: int, log_msg: str, fields: Mapping[str, Any]) -> None:
        outcome = OUTCOMES.get(status, "error")
        duration = time.perf_counter() - self.started
        self.metrics.admin_requests.labels(self.endpoint, outcome).inc()
        self.metrics.admin_duration.labels(self.endpoint, outcome).observe(duration)
        line = {
            "request_id": self.request_id,
            "requester_ip": self.requester_ip,
            "user_agent": self.request.headers.get("user-agent", ""),
            "method": self.request.method,
            "path": self.request.url.path,
            "endpoint": self.endpoint,
            "status": status,
            "outcome": outcome,
            "duration_ms": round(duration * 1000, 3),
            **({"token_slot": self.principal.slot} if self.principal else {}),
            **fields,
        }
        if status < 400:
            log.info(log_msg, **line)
        else:
            log.warning(log_msg, **line)


def json_response(status: int, body: dict[str, Any], request_id: str) -> Response:
    return Response(
        orjson.dumps(body) + b"\n",
        status_code=status,
        media_type="application/json",
        headers={"X-Request-ID": request_id},
    )
