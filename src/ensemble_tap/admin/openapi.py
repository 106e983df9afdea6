"""The admin API's OpenAPI document, built from the FastAPI app without a running server.

``python -m ensemble_tap.admin.openapi`` prints it as YAML; ``make openapi`` writes it to
``docs/admin-openapi.yaml`` and a unit test fails when the committed file is out of date.

The app is the one ``build_admin`` makes, for the default config over a NATS client that never
connects: only its routes and models are read. The document is then completed with what
FastAPI cannot see: the ``X-Admin-Token`` security scheme (from the token slots of
``guards``), the scope each route declares in its ``guarded(...)`` parameter and the slots
that grant it, the request-id headers, ``Retry-After`` on 429, and the rule that optional
response fields are left out rather than sent as ``null``.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable
from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ensemble_tap.admin.guarded import route_scope
from ensemble_tap.admin.guards import Scope, slot_scopes, slots_granting
from ensemble_tap.admin.jobs import JobStatus
from ensemble_tap.admin.routes import router
from ensemble_tap.admin.service import build_admin
from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics

SECURITY_SCHEME = "AdminToken"
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
    "sequence": {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
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


def build_admin_app() -> FastAPI:
    """The admin app as ``build_admin`` makes it for the default config, over a broker that
    never connects: only its routes and models are read."""
    config = Config()
    metrics = Metrics()
    broker = Broker(config.nats, [], metrics)
    publisher = JetStreamPublisher(broker, config.nats, metrics)
    return build_admin(config, broker=broker, publisher=publisher, metrics=metrics).app


def route_scopes(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], Scope]:
    """(method, path) → the scope each route declares in its ``guarded(...)`` parameter."""
    scopes: dict[tuple[str, str], Scope] = {}
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        scope = route_scope(route)
        if scope is not None:
            scopes |= {(method.lower(), route.path): scope for method in route.methods or ()}
    return scopes


def scheme_description() -> str:
    """The security scheme's text, from the token slots (``guards.slot_scopes``): slots that
    grant the same scopes are named together."""
    groups = [
        (" and ".join(name for name, _ in group), scopes)
        for scopes, group in itertools.groupby(slot_scopes(), key=lambda slot: slot[1])
    ]
    slots = ", ".join(
        f"{names} ({', '.join(scope for scope in Scope if scope in scopes)})"
        for names, scopes in groups
    )
    return (
        f"One of the configured admin tokens. Slots and scopes: {slots}. A missing, wrong or "
        "insufficient token is answered 401."
    )


def build_openapi() -> dict[str, Any]:
    """The published admin OpenAPI document."""
    document: dict[str, Any] = build_admin_app().openapi()  # FastAPI's own, completed here
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
            "description": scheme_description(),
        }
    }
    document["security"] = [{SECURITY_SCHEME: []}]
    scopes = route_scopes(router.routes)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            _complete_operation(operation, scopes.get((method, path)))
    return document


def _complete_operation(operation: dict[str, Any], scope: Scope | None) -> None:
    if scope is not None:
        slots = ", ".join(slots_granting(scope))
        note = f"Requires scope `{scope}` (token slots: {slots})."
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
