"""docs/admin-openapi.yaml is generated from the code and must be kept in step with it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ensemble_tap.admin import models
from ensemble_tap.admin.guards import Scope, TokenAuthenticator
from ensemble_tap.admin.openapi import build_openapi, render_yaml
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.poller.status import PollerStatus as PollerRuntimeStatus

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "admin-openapi.yaml"
# (method, path) → the scope the reference requires.
ROUTES = {
    ("post", "/admin/replay-dlq"): "replay",
    ("get", "/admin/replay-dlq"): "read",
    ("get", "/admin/replay-dlq/{job_id}"): "read",
    ("delete", "/admin/replay-dlq/{job_id}"): "cancel",
    ("get", "/admin/dlq"): "read",
    ("get", "/admin/dlq/{id}"): "read",
    ("get", "/admin/events"): "read",
    ("get", "/admin/events/stream"): "read",
    ("get", "/admin/poller-status"): "read",
    ("get", "/admin/metrics/history"): "read",
    **{
        ("post", f"/admin/pollers/{{provider}}/{{tenant}}/{a}"): "replay"
        for a in ("run", "pause", "resume", "reset")
    },
}
SLOT_KEYS = {
    "primary": "admin_token",
    "secondary": "admin_token_secondary",
    "read": "admin_token_read",
    "replay": "admin_token_replay",
    "cancel": "admin_token_cancel",
}
SCHEME_TEXT = re.compile(
    r"One of the configured admin tokens\. Slots and scopes: (?P<slots>.+)\. "
    r"A missing, wrong or insufficient token is answered 401\."
)
SLOT_GROUP = re.compile(r"(?P<names>[a-z ]+?) \((?P<scopes>[a-z, ]+)\)(?:, |$)")
SCOPE_NOTE = re.compile(
    r"Requires scope `(?P<scope>[a-z]+)` \(token slots: (?P<slots>[a-z, ]+)\)\.$"
)


def _enforced_grants() -> dict[str, set[str]]:
    """Slot → the scopes its token is let through for, as the authenticator decides."""
    server = ServerConfig(**{key: f"token-{slot}" for slot, key in SLOT_KEYS.items()})
    authenticator = TokenAuthenticator(server)
    return {
        slot: {scope.value for scope in Scope if authenticator.authenticate(f"token-{slot}", scope)}
        for slot in SLOT_KEYS
    }


def _documented_grants(description: str) -> dict[str, set[str]]:
    """Slot → scopes, as the security scheme's description states them."""
    text = SCHEME_TEXT.fullmatch(description)
    assert text is not None, description
    grants: dict[str, set[str]] = {}
    groups = list(SLOT_GROUP.finditer(text["slots"]))
    assert "".join(group[0] for group in groups) == text["slots"], text["slots"]
    for group in groups:
        for name in group["names"].split(" and "):
            grants[name] = set(group["scopes"].split(", "))
    return grants


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }


def test_the_committed_document_is_the_generated_one() -> None:
    generated = render_yaml(build_openapi())
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    assert committed == generated, (
        "docs/admin-openapi.yaml is out of date with the admin API code: run `make openapi` "
        "and commit the result"
    )


def test_the_module_prints_the_document() -> None:
    """What ``make openapi`` runs."""
    result = subprocess.run(
        [sys.executable, "-m", "ensemble_tap.admin.openapi"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == render_yaml(build_openapi())
    assert yaml.safe_load(result.stdout)["openapi"].startswith("3.")


def test_the_security_scheme_states_the_scopes_each_token_slot_is_granted() -> None:
    scheme = build_openapi()["components"]["securitySchemes"]["AdminToken"]
    description = scheme.pop("description")
    assert scheme == {"type": "apiKey", "in": "header", "name": "X-Admin-Token"}
    assert _documented_grants(description) == _enforced_grants()


def test_every_admin_route_is_described_with_its_security_and_request_id() -> None:
    document = build_openapi()
    assert document["security"] == [{"AdminToken": []}]
    operations = _operations(document)
    assert set(operations) == set(ROUTES)
    grants = _enforced_grants()
    for (method, path), operation in operations.items():
        refs = [p.get("$ref") for p in operation["parameters"]]
        assert "#/components/parameters/XRequestID" in refs, (method, path)
        assert "#/components/parameters/XCorrelationID" in refs, (method, path)
        note = SCOPE_NOTE.search(operation["description"])
        assert note is not None, (method, path)
        assert note["scope"] == ROUTES[(method, path)], (method, path)
        slots = note["slots"].split(", ")
        assert slots == [slot for slot in SLOT_KEYS if note["scope"] in grants[slot]]
        assert "422" not in operation["responses"]
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], (method, path, status)
            if status == "429":
                assert "Retry-After" in response["headers"]
            if status not in ("200", "202"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/AdminError"}
    parameters = document["components"]["parameters"]
    assert {p["name"] for p in parameters.values()} == {"X-Request-ID", "X-Correlation-ID"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


def _null_types(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("type") == "null":
            yield node
        for value in node.values():
            yield from _null_types(value)
    elif isinstance(node, list):
        for value in node:
            yield from _null_types(value)


def test_optional_response_fields_are_omitted_never_null() -> None:
    document = build_openapi()
    job = document["components"]["schemas"]["ReplayJob"]
    assert "started_at" not in job["required"]
    assert job["properties"]["started_at"] == {"title": "Started At", "type": "string"}
    assert not list(_null_types(document))
    limit = next(
        p
        for p in _operations(document)[("post", "/admin/replay-dlq")]["parameters"]
        if p.get("name") == "limit"
    )
    assert limit["schema"]["type"] == "integer"
    assert limit["schema"]["minimum"] == 1


def test_poller_status_entries_match_the_documented_model() -> None:
    """The poller registry's entries, with every field set, fit ``PollerStatus``."""
    entry = PollerRuntimeStatus(
        provider="hubspot",
        tenant_id="t1",
        interval=60.0,
        rate_limit_per_sec=4.0,
        burst=1,
        failure_budget=5,
        circuit_break=30.0,
        jitter_ratio=0.1,
        last_run_ns=1_800_000_000_000_000_000,
        last_success_ns=1_800_000_000_500_000_000,
        last_error_ns=1_800_000_001_000_000_000,
        last_error="upstream 503",
        consecutive_failures=1,
        circuit="half_open",
        next_run_ns=1_800_000_060_000_000_000,
        checkpoints={"contacts": 1_799_999_000_000_000_000, "deals": None},
        last_cycle={"fetched": 3, "duration_ms": 12.5},
    )
    shown = entry.to_json(1_800_000_002_000_000_000)
    model = models.PollerStatus.model_validate(shown)
    assert model.model_dump(exclude_none=True) == shown
    bare = PollerRuntimeStatus("notion", "", 30.0, 3.0, 1, 5, 30.0, 0.0).to_json(0)
    models.PollerStatus.model_validate(bare)
