"""The admin API's OpenAPI document, built from the FastAPI app without a running server.

``python -m ensemble_tap.admin.openapi`` prints it as YAML; ``make openapi`` writes it to
``docs/admin-openapi.yaml`` and a unit test fails when the committed file is out of date.

The app is built from real, unconnected objects (a NATS client that never connects, an
in-memory job store): only its routes and models are read. The document is then completed
with what FastAPI cannot see: the ``X-Admin-Token`` security scheme and the scope each route
needs, the request-id headers, ``Retry-After`` on 429, and the rule that optional response
fields are left out rather than sent as ``null``.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from ensemble_tap.admin.jobs import JobRegistry, JobStatus, Limits, MemoryJobStore
from ensemble_tap.admin.replay import Replayer
from ensemble_tap.admin.routes import AdminDependencies, admin_app
from ensemble_tap.admin.runner import ReplayRunner
from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq_store import DeadLetterStore
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import dlq_stream_name
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics

SECURITY_SCHEME = "AdminToken"
# (method, path) → scope, as enforced by the routes (see guards.Scope and spec §2.6).
SCOPES = {
    ("post", "/admin/replay-dlq"): "replay",
    ("get", "/admin/replay-dlq"): "read",
    ("get", "/admin/replay-dlq/{job_id}"): "read",
    ("delete", "/admin/replay-dlq/{job_id}"): "cancel",
    ("get", "/admin/dlq"): "read",
    ("get", "/admin/events"): "read",
    ("get", "/admin/poller-status"): "read",
}
SLOTS_BY_SCOPE = {
    "read": "primary, secondary, read, replay, cancel",
    "replay": "primary, secondary, replay",
    "cancel": "primary, secondary, cancel",
}
REQUEST_ID_PARAMETERS: dict[str, Any] = {
    "XRequestID": {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": (
            "Request id echoed in the `X-Request-ID` response header, the `request_id` body "
            "field and the audit log. Used when at most 128 characters of "
            "`[A-Za-z0-9._:@/+=-]`; otherwise the service generates "
            "`admin-<time-ordered 32-hex id>`."
        ),
        "schema": {"type": "string"},
    },
    "XCorrelationID": {
        "name": "X-Correlation-ID",
        "in": "header",
        "required": False,
        "description": "Used as the request id when `X-Request-ID` is absent (same rules).",
        "schema": {"type": "string"},
    },
}
INT64_MAX = 2**63 - 1
# The handlers take these query values as text to answer the reference's exact 400 messages;
# the document states what they accept.
BOOLEAN_TEXT = {"type": "boolean", "description": "true/false (also 1/0, t/f, TRUE/FALSE)"}
QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
    "dry_run": BOOLEAN_TEXT,
    "include_payload": BOOLEAN_TEXT,
    "status": {"type": "string", "enum": [status.value for status in JobStatus]},
}
RESPONSE_HEADERS: dict[str, Any] = {
    "XRequestID": {
        "description": "The request id of this call (given or generated).",
        "required": True,
        "schema": {"type": "string"},
    },
    "RetryAfter": {
        "description": "Seconds until the rate-limit bucket holds a token again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
}


def build_app_schema() -> dict[str, Any]:
    """FastAPI's own document for the admin app (before the additions of this module)."""
    config = Config()
    metrics = Metrics()
    broker = Broker(config.nats, [], metrics)  # never connected: nothing is served
    registry = JobRegistry(
        MemoryJobStore(),
        Limits(
            ttl_seconds=config.server.admin_replay_job_ttl,
            max_jobs=config.server.admin_replay_job_max_jobs,
            max_queued_per_ip=config.server.admin_replay_max_queued_per_ip,
            max_queued_per_token=config.server.admin_replay_max_queued_per_token,
        ),
    )
    dead_letters = DeadLetterStore(broker.js, dlq_stream_name(config.nats))
    replayer = Replayer(
        dead_letters,
        JetStreamPublisher(broker, config.nats, metrics),
        config.nats.subject_prefix,
        config.nats.tenant_scoped_subjects,
    )
    runner = ReplayRunner(
        registry,
        replayer,
        config.server.admin_replay_max_concurrent_jobs,
        config.server.admin_replay_job_timeout,
        metrics,
    )
    app = admin_app(
        AdminDependencies(
            server=config.server,
            registry=registry,
            runner=runner,
            dead_letters=dead_letters,
            metrics=metrics,
            poller_status=list,
        )
    )
    return app.openapi()


def build_openapi() -> dict[str, Any]:
    """The published admin OpenAPI document."""
    document = build_app_schema()
    components = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)  # request validation errors are answered as 400 AdminError
    for schema in schemas.values():
        _omitted_not_null(schema)
    components["parameters"] = REQUEST_ID_PARAMETERS
    components["headers"] = RESPONSE_HEADERS
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "X-Admin-Token",
            "description": (
                "One of the configured admin tokens. Slots and scopes: primary and secondary "
                "(read, replay, cancel), read (read), replay (read, replay), cancel (read, "
                "cancel). A missing, wrong or insufficient token is answered 401."
            ),
        }
    }
    document["security"] = [{SECURITY_SCHEME: []}]
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            _complete_operation(method, path, operation)
    return document


def _complete_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    scope = SCOPES.get((method, path))
    if scope is not None:
        note = f"Requires scope `{scope}` (token slots: {SLOTS_BY_SCOPE[scope]})."
        description = operation.get("description", "")
        operation["description"] = f"{description}\n\n{note}".strip()
    parameters = operation.setdefault("parameters", [])
    for parameter in parameters:
        schema = parameter.setdefault("schema", {})
        _omitted_not_null(schema)
        if parameter.get("in") == "query" and parameter.get("name") in QUERY_SCHEMAS:
            schema.pop("type", None)
            schema.update(QUERY_SCHEMAS[parameter["name"]])
    parameters += [{"$ref": f"#/components/parameters/{name}"} for name in REQUEST_ID_PARAMETERS]
    responses: dict[str, Any] = operation.get("responses", {})
    responses.pop("422", None)
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = {"$ref": "#/components/headers/XRequestID"}
        if status == "429":
            headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}


def _omitted_not_null(schema: dict[str, Any]) -> None:
    """``anyOf: [X, null]`` → ``X``: optional values are left out of responses (and query
    parameters are simply absent), never sent as ``null``."""
    for value in (schema, *schema.get("properties", {}).values()):
        options = value.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            del value["anyOf"]
            if len(rest) == 1:
                value.update(rest[0])
            else:
                value["anyOf"] = rest
            if value.get("default", "") is None:
                del value["default"]


def render_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def main() -> None:
    sys.stdout.write(render_yaml(build_openapi()))


if __name__ == "__main__":
    main()
