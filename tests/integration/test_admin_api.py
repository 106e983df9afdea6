"""The admin API over HTTP against the real service and a real nats-server: role matrix,
guards in order, every error message, request ids, idempotency, paging, cancel, audit log
and metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest

from ensemble_tap.admin.guards import fingerprint
from ensemble_tap.admin.jobs import Job, JobRegistry, NewJob, ReplayRequest
from ensemble_tap.admin.replay_jobs import LocalJobs
from ensemble_tap.bus.embedded import free_port
from tests.integration.conftest import StartApp
from tests.support.app import RunningApp
from tests.support.nats_server import NatsServer
from tests.support.waiting import until

TOKENS = {
    "primary": "tok-primary-0123456789",
    "secondary": "tok-secondary-0123456789",
    "read": "tok-read-0123456789",
    "replay": "tok-replay-0123456789",
    "cancel": "tok-cancel-0123456789",
}
SLOT_KEYS = {
    "primary": "admin_token",
    "secondary": "admin_token_secondary",
    "read": "admin_token_read",
    "replay": "admin_token_replay",
    "cancel": "admin_token_cancel",
}
# Generous limits: only the rate-limit tests are about rate limits.
HIGH_RATE = {"admin_rate_limit_per_sec": 100_000, "admin_rate_limit_burst": 100_000}
ADMIN = {"X-Admin-Token": TOKENS["primary"]}
GENERATED_ID = re.compile(r"^admin-[0-9a-f]{32}$")
CLI = str(Path(sys.executable).parent / "ensemble-tap")


def server(**extra: Any) -> dict[str, Any]:
    return {"admin_token": TOKENS["primary"], **HIGH_RATE, **extra}


def all_slots(**extra: Any) -> dict[str, Any]:
    return {**{SLOT_KEYS[slot]: token for slot, token in TOKENS.items()}, **HIGH_RATE, **extra}


def token(slot: str) -> dict[str, str]:
    return {"X-Admin-Token": TOKENS[slot]}


def registry_of(app: RunningApp) -> JobRegistry:
    jobs = app.app.replay_jobs
    assert isinstance(jobs, LocalJobs)
    return jobs.registry


def queued_job(app: RunningApp, ip: str = "127.0.0.1", slot: str = "primary") -> Job:
    """A job that stays queued: created in the registry but never handed to a worker."""
    job, _ = registry_of(app).create(
        NewJob(
            request=ReplayRequest(effective_limit=100, dry_run=True),
            requested_limit=0,
            max_limit=2000,
            capped=False,
            idempotency_key="",
            creator_ip=ip,
            token_fingerprint=fingerprint(TOKENS[slot]),
            request_id="req-queued",
            reason="",
        )
    )
    return job


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/admin/replay-dlq/{job_id}", headers=ADMIN).json()["job"]
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job: dict[str, Any] = until(finished, 10.0, interval=0.025, what=f"job {job_id} finished")
    return job


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {"request_id": response.headers["x-request-id"], "error": error}


# --- roles ---------------------------------------------------------------------------------

ROUTES = [
    # (method, path, params, required scope, status when allowed)
    ("POST", "/admin/replay-dlq", {"dry_run": "true"}, "replay", 202),
    ("GET", "/admin/replay-dlq", {}, "read", 200),
    ("GET", "/admin/replay-dlq/{job_id}", {}, "read", 200),
    ("DELETE", "/admin/replay-dlq/replay_0_0", {}, "cancel", 404),
    ("GET", "/admin/poller-status", {}, "read", 200),
    ("GET", "/admin/dlq", {}, "read", 200),
]
GRANTS = {
    "primary": {"read", "replay", "cancel"},
    "secondary": {"read", "replay", "cancel"},
    "read": {"read"},
    "replay": {"read", "replay"},
    "cancel": {"read", "cancel"},
}


def test_role_matrix(start_app: StartApp) -> None:
    app = start_app(server=all_slots())
    with httpx.Client(base_url=app.url) as client:
        job_id = client.post("/admin/replay-dlq", headers=ADMIN).json()["job"]["job_id"]
        seen: dict[tuple[str, str, str], int] = {}
        for slot in TOKENS:
            for method, path, params, scope, allowed_status in ROUTES:
                url = path.format(job_id=job_id)
                response = client.request(method, url, params=params, headers=token(slot))
                seen[(slot, method, path)] = response.status_code
                if scope in GRANTS[slot]:
                    assert response.status_code == allowed_status, (slot, method, path)
                else:
                    assert_error(response, 401, "unauthorized")
        for headers in ({}, {"X-Admin-Token": "not-a-token"}, {"X-Admin-Token": ""}):
            for method, path, params, _, _ in ROUTES:
                url = path.format(job_id=job_id)
                response = client.request(method, url, params=params, headers=headers)
                assert_error(response, 401, "unauthorized")
    denied = sorted((slot, method) for (slot, method, _), status in seen.items() if status == 401)
    assert denied == [
        ("cancel", "POST"),
        ("read", "DELETE"),
        ("read", "POST"),
        ("replay", "DELETE"),
    ]


def test_admin_routes_are_absent_without_a_token(start_app: StartApp) -> None:
    app = start_app(server={"admin_token": "  ", **HIGH_RATE})
    with httpx.Client(base_url=app.url) as client:
        for method, path in (
            ("GET", "/admin/replay-dlq"),
            ("POST", "/admin/replay-dlq"),
            ("GET", "/admin/dlq"),
            ("GET", "/admin/poller-status"),
        ):
            response = client.request(method, path, headers=ADMIN)
            assert response.status_code == 404
            assert "x-request-id" not in response.headers
            assert b"request_id" not in response.content
        assert client.get("/livez").status_code == 200


def test_wrong_methods_and_unknown_paths_get_json_errors(start_app: StartApp) -> None:
    app = start_app(server=server())
    with httpx.Client(base_url=app.url) as client:
        response = client.put("/admin/replay-dlq", headers={**ADMIN, "X-Request-ID": "put-1"})
        assert_error(response, 405, "method not allowed")
        assert response.headers["x-request-id"] == "put-1"
        # Every method of the path, although two routes serve it.
        assert response.headers["allow"] == "GET, POST"
        response = client.patch("/admin/replay-dlq/some-job", headers=ADMIN)
        assert_error(response, 405, "method not allowed")
        assert response.headers["allow"] == "DELETE, GET"
        assert_error(client.post("/admin/poller-status", headers=ADMIN), 405, "method not allowed")
        assert_error(client.get("/admin/nothing-here", headers=ADMIN), 404, "not found")
    assert app.metric("tap_admin_requests_total", endpoint="unknown", outcome="bad_request") == 3
    assert app.metric("tap_admin_requests_total", endpoint="unknown", outcome="not_found") == 1


def test_probes_and_admin_get_routes_answer_head(start_app: StartApp) -> None:
    app = start_app(server=server())
    with httpx.Client(base_url=app.url) as client:
        for path in ("/livez", "/readyz", "/metrics"):
            head = client.head(path)
            assert head.status_code == 200, path
            assert head.content == b""
        head = client.head("/admin/dlq", headers=ADMIN)
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0  # the length a GET gets
        assert client.head("/admin/dlq").status_code == 401
        assert client.head("/webhooks/acme").status_code == 405


# --- request ids ---------------------------------------------------------------------------


def test_request_id_is_echoed_validated_or_generated(start_app: StartApp) -> None:
    app = start_app(server=server())
    with httpx.Client(base_url=app.url) as client:

        def request_id(headers: dict[str, str], **extra: str) -> str:
            response = client.get("/admin/replay-dlq", headers={**ADMIN, **headers, **extra})
            assert response.headers["x-request-id"] == response.json()["request_id"]
            return response.headers["x-request-id"]

        assert request_id({"X-Request-ID": "ops-42:a/b+c=d@e"}) == "ops-42:a/b+c=d@e"
        assert request_id({"X-Request-ID": "", "X-Correlation-ID": "corr-8"}) == "corr-8"
        assert request_id({"X-Correlation-ID": "corr-7"}) == "corr-7"
        assert request_id({"X-Request-ID": "rid-1", "X-Correlation-ID": "corr-7"}) == "rid-1"
        assert request_id({"X-Request-ID": "x" * 128}) == "x" * 128
        for bad in ("x" * 129, "has space", "semi;colon", 'quote"d'):
            assert GENERATED_ID.match(request_id({"X-Request-ID": bad})), bad
        first, second = request_id({}), request_id({})
        assert GENERATED_ID.match(first) and GENERATED_ID.match(second) and first != second
        # Also on guard failures.
        denied = client.get("/admin/replay-dlq", headers={"X-Request-ID": "denied-1"})
        assert_error(denied, 401, "unauthorized")
        assert denied.headers["x-request-id"] == "denied-1"


# --- guards --------------------------------------------------------------------------------


def test_cidr_allowlist_ignores_forwarded_headers_from_an_untrusted_peer(
    start_app: StartApp,
) -> None:
    app = start_app(server=server(admin_allowed_cidrs=["10.0.0.0/8"], admin_rate_limit_burst=1))
    with httpx.Client(base_url=app.url) as client:
        for headers in (
            ADMIN,
            {**ADMIN, "X-Forwarded-For": "10.1.2.3"},
            {**ADMIN, "X-Real-IP": "10.1.2.3"},
            {"X-Admin-Token": "wrong"},  # the caller never learns whether its token is valid
            {},
        ):
            # Refused before the rate limit: burst 1 is never charged.
            assert_error(client.get("/admin/replay-dlq", headers=headers), 403, "forbidden")


def test_cidr_allowlist_believes_a_trusted_proxy(start_app: StartApp) -> None:
    app = start_app(
        server=server(admin_allowed_cidrs=["10.0.0.0/8"], trusted_proxies=["127.0.0.1/32"])
    )
    with httpx.Client(base_url=app.url) as client:

        def status(**headers: str) -> int:
            extra = {name.replace("_", "-"): value for name, value in headers.items()}
            return client.get("/admin/replay-dlq", headers={**ADMIN, **extra}).status_code

        assert status(X_Forwarded_For="10.1.2.3") == 200
        assert status(X_Real_IP="10.1.2.4") == 200
        # The right-most hop not added by a trusted proxy is the client: a spoofed 10.x
        # prepended by the client itself does not help.
        assert status(X_Forwarded_For="10.1.2.3, 192.0.2.1") == 403
        assert status() == 403  # the proxy itself is not in the allowlist


def test_cidr_allowlist_uses_the_peer_address(start_app: StartApp) -> None:
    app = start_app(server=server(admin_allowed_cidrs=["127.0.0.0/8", "::1/128"]))
    with httpx.Client(base_url=app.url) as client:
        headers = {**ADMIN, "X-Forwarded-For": "192.0.2.1"}  # ignored: untrusted peer
        assert client.get("/admin/replay-dlq", headers=headers).status_code == 200


def test_client_certificate_header_counts_only_from_a_trusted_proxy(
    start_app: StartApp,
) -> None:
    untrusted = start_app(server=server(admin_mtls_required=True, admin_rate_limit_burst=1))
    trusted = start_app(
        server=server(
            admin_mtls_required=True,
            admin_mtls_client_cert_header="X-SSL-Client-Cert",
            trusted_proxies=["127.0.0.1/32"],
        )
    )
    message = "mTLS client certificate required"
    with httpx.Client(base_url=untrusted.url) as client:
        for headers in ({}, {"X-Forwarded-Client-Cert": "Hash=abc;Subject=CN=ops"}):
            # Refused before the rate limit: burst 1 is never charged.
            for _ in range(2):
                response = client.get("/admin/replay-dlq", headers={**ADMIN, **headers})
                assert_error(response, 403, message)
    with httpx.Client(base_url=trusted.url) as client:
        cert = {"X-SSL-Client-Cert": "Hash=abc;Subject=CN=ops"}
        assert client.get("/admin/replay-dlq", headers={**ADMIN, **cert}).status_code == 200
        for headers in ({}, {"X-SSL-Client-Cert": ""}, {"X-Forwarded-Client-Cert": "x"}):
            response = client.get("/admin/replay-dlq", headers={**ADMIN, **headers})
            assert_error(response, 403, message)


def test_cidr_allowlist_comes_before_the_certificate_guard(start_app: StartApp) -> None:
    app = start_app(server=server(admin_allowed_cidrs=["10.0.0.0/8"], admin_mtls_required=True))
    with httpx.Client(base_url=app.url) as client:
        assert_error(client.get("/admin/replay-dlq", headers=ADMIN), 403, "forbidden")


def test_rate_limit_per_ip_comes_before_authentication(start_app: StartApp) -> None:
    app = start_app(
        server={
            "admin_token": TOKENS["primary"],
            "admin_rate_limit_per_sec": 0.5,
            "admin_rate_limit_burst": 2,
        }
    )
    with httpx.Client(base_url=app.url) as client:
        wrong = {"X-Admin-Token": "wrong"}
        assert_error(client.get("/admin/replay-dlq", headers=wrong), 401, "unauthorized")
        assert client.get("/admin/replay-dlq", headers=ADMIN).status_code == 200
        # The bucket of this IP is empty now, for the valid token as well.
        for headers in (ADMIN, wrong, {}):
            response = client.get(
                "/admin/replay-dlq", headers={**headers, "X-Request-ID": "limited-1"}
            )
            assert_error(response, 429, "rate limit exceeded")
            assert response.headers["x-request-id"] == "limited-1"
            # The time until the bucket holds a token again: 1 / 0.5 s at most.
            assert 1 <= int(response.headers["retry-after"]) <= 2
        # Every endpoint has its own buckets.
        assert client.get("/admin/poller-status", headers=ADMIN).status_code == 200
    assert (
        app.metric("tap_admin_requests_total", endpoint="replay_dlq_list", outcome="rate_limited")
        == 3
    )


def test_rate_limit_per_token(start_app: StartApp) -> None:
    app = start_app(
        server={
            "admin_token": TOKENS["primary"],
            "admin_token_secondary": TOKENS["secondary"],
            "trusted_proxies": ["127.0.0.1/32"],
            "admin_rate_limit_per_sec": 0.001,
            "admin_rate_limit_burst": 2,
        }
    )
    with httpx.Client(base_url=app.url) as client:

        def get(ip: str, headers: dict[str, str]) -> httpx.Response:
            return client.get("/admin/replay-dlq", headers={**headers, "X-Forwarded-For": ip})

        # Fresh IPs each time: only the bucket of the presented token runs dry.
        assert get("192.0.2.1", ADMIN).status_code == 200
        assert get("192.0.2.2", ADMIN).status_code == 200
        limited = get("192.0.2.3", ADMIN)
        assert_error(limited, 429, "rate limit exceeded")
        assert int(limited.headers["retry-after"]) >= 1
        assert get("192.0.2.4", token("secondary")).status_code == 200
        # An invalid token has a bucket of its own too (rate limits run before auth).
        assert get("192.0.2.5", {"X-Admin-Token": "guess"}).status_code == 401


def with_raw_reason(reason: bytes) -> list[tuple[bytes, bytes]]:
    """The admin headers with an ``X-Admin-Reason`` given as raw bytes (not always UTF-8)."""
    return [(k.encode(), v.encode()) for k, v in ADMIN.items()] + [(b"X-Admin-Reason", reason)]


# --- error messages (docs/operations.md, "Errors") ------------------------------------------------

REPLAY, DLQ = "/admin/replay-dlq", "/admin/dlq"
NOT_INT = 'invalid {} "{}": must be a positive integer'
NOT_POSITIVE = 'invalid {} "{}": must be greater than 0'
BAD_STATUS = 'invalid status "{}": must be one of queued|running|succeeded|failed|cancelled'
SHORT_REASON = "X-Admin-Reason must be at least 12 characters"
# (method, path, query, headers, error); where several values are bad, the first check wins.
# fmt: off
BAD_REQUESTS: list[tuple[str, str, dict[str, str], dict[str, Any], str]] = [
    # POST /admin/replay-dlq: limit → dry_run → reason
    ("POST", REPLAY, {"limit": "abc"}, {}, NOT_INT.format("limit", "abc")),
    ("POST", REPLAY, {"limit": " 1_0 "}, {}, NOT_INT.format("limit", "1_0")),
    ("POST", REPLAY, {"limit": "2.5"}, {}, NOT_INT.format("limit", "2.5")),
    ("POST", REPLAY, {"limit": str(2**64)}, {}, NOT_INT.format("limit", 2**64)),
    ("POST", REPLAY, {"limit": 'a"b'}, {}, NOT_INT.format("limit", 'a\\"b')),
    ("POST", REPLAY, {"limit": "0"}, {}, NOT_POSITIVE.format("limit", "0")),
    ("POST", REPLAY, {"limit": "-3"}, {}, NOT_POSITIVE.format("limit", "-3")),
    ("POST", REPLAY, {"dry_run": "yes"}, {}, 'invalid boolean "yes"'),
    ("POST", REPLAY, {"limit": "x", "dry_run": "yes"}, {}, NOT_INT.format("limit", "x")),
    ("POST", REPLAY, {}, {"X-Admin-Reason": "too short"}, SHORT_REASON),
    ("POST", REPLAY, {"dry_run": "yes"}, {"X-Admin-Reason": "short"}, 'invalid boolean "yes"'),
    # Characters, not bytes: 11 two-byte characters (sent as UTF-8) are still too short.
    ("POST", REPLAY, {}, {"X-Admin-Reason": ("é" * 11).encode()}, SHORT_REASON),
    ("DELETE", f"{REPLAY}/replay_0_0", {}, {"X-Admin-Reason": "too short"}, SHORT_REASON),
    # GET /admin/replay-dlq: status → limit → cursor
    ("GET", REPLAY, {"status": " Bogus "}, {}, BAD_STATUS.format("Bogus")),
    ("GET", REPLAY, {"status": "bogus", "limit": "x", "cursor": "!"}, {},
     BAD_STATUS.format("bogus")),
    ("GET", REPLAY, {"limit": "ten"}, {}, NOT_INT.format("list limit", "ten")),
    ("GET", REPLAY, {"limit": "0"}, {}, NOT_POSITIVE.format("list limit", "0")),
    ("GET", REPLAY, {"limit": "0", "cursor": "!"}, {}, NOT_POSITIVE.format("list limit", "0")),
    ("GET", REPLAY, {"cursor": "MTJ8am9i="}, {}, "invalid cursor: malformed encoding"),
    ("GET", REPLAY, {"cursor": "not base64!"}, {}, "invalid cursor: malformed encoding"),
    ("GET", REPLAY, {"cursor": "MTIzNDU"}, {}, "invalid cursor: malformed payload"),
    ("GET", REPLAY, {"cursor": "YWJjfGpvYg"}, {}, "invalid cursor: bad timestamp"),
    ("GET", REPLAY, {"cursor": "LS01fGpvYg"}, {}, "invalid cursor: bad timestamp"),  # "--5|job"
    ("GET", REPLAY, {"cursor": "MTJ8"}, {}, "invalid cursor: missing job id"),
    # GET/DELETE one
    ("GET", f"{REPLAY}/%20%20", {}, {}, "job_id is required"),
    ("DELETE", f"{REPLAY}/%20", {}, {}, "job_id is required"),
    # GET /admin/dlq
    ("GET", DLQ, {"limit": "-1"}, {}, NOT_POSITIVE.format("list limit", "-1")),
    ("GET", DLQ, {"include_payload": "maybe"}, {}, 'invalid boolean "maybe"'),
    ("GET", DLQ, {"cursor": "!!"}, {}, "invalid cursor: malformed encoding"),
    ("GET", DLQ, {"cursor": "MTJ8am9i"}, {}, "invalid cursor: malformed payload"),
    ("GET", DLQ, {"cursor": "c2VxfMKy"}, {}, "invalid cursor: malformed payload"),  # "seq|²"
]
# fmt: on


def test_every_bad_request_message(start_app: StartApp) -> None:
    app = start_app(server=server())
    with httpx.Client(base_url=app.url) as client:
        for method, path, params, headers, error in BAD_REQUESTS:
            response = client.request(method, path, params=params, headers={**ADMIN, **headers})
            assert response.status_code == 400, (method, path, params, response.text)
            assert_error(response, 400, error)
        # Nothing was created by the refused requests.
        assert client.get("/admin/replay-dlq", headers=ADMIN).json()["count"] == 0
        # The boundaries that are accepted.
        accepted = client.post(
            "/admin/replay-dlq",
            params={"limit": "+9223372036854775807", "dry_run": "T"},
            headers=with_raw_reason(("é" * 12).encode()),
        )
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()["job"]
        assert (job["requested_limit"], job["effective_limit"], job["capped"]) == (
            9223372036854775807,
            2000,
            True,
        )
        assert (job["dry_run"], job["operator_reason"]) == (True, "é" * 12)
        latin1 = client.post(  # not UTF-8: taken as Latin-1, as the bytes say
            "/admin/replay-dlq",
            params={"dry_run": "true"},
            headers=with_raw_reason(b"\xe9" * 12),
        )
        assert latin1.json()["job"]["operator_reason"] == "é" * 12
        listing = client.get(
            "/admin/replay-dlq", params={"status": "SUCCEEDED", "limit": "100000"}, headers=ADMIN
        ).json()
        assert (listing["status"], listing["limit"]) == ("succeeded", 500)
        assert_error(
            client.get("/admin/replay-dlq/replay_0_0", headers=ADMIN), 404, "replay job not found"
        )
        assert_error(
            client.delete("/admin/replay-dlq/replay_0_0", headers=ADMIN),
            404,
            "replay job not found",
        )
    assert app.metric("tap_admin_requests_total", endpoint="replay_dlq", outcome="bad_request") > 0


def test_reason_required(start_app: StartApp) -> None:
    app = start_app(
        server=server(admin_replay_require_reason=True, admin_replay_reason_min_length=5)
    )
    with httpx.Client(base_url=app.url) as client:
        for method, path in (("POST", "/admin/replay-dlq"), ("DELETE", "/admin/replay-dlq/x")):
            for reason in (None, ""):
                headers = {**ADMIN} if reason is None else {**ADMIN, "X-Admin-Reason": reason}
                response = client.request(method, path, headers=headers)
                assert_error(response, 400, "X-Admin-Reason header is required")
            response = client.request(method, path, headers={**ADMIN, "X-Admin-Reason": "abcd"})
            assert_error(response, 400, "X-Admin-Reason must be at least 5 characters")
        created = client.post(
            "/admin/replay-dlq",
            params={"dry_run": "1"},
            headers={**ADMIN, "X-Admin-Reason": "INC-1"},
        )
        assert created.status_code == 202
        assert created.json()["job"]["operator_reason"] == "INC-1"
        # GET routes ignore the header.
        assert client.get("/admin/replay-dlq", headers=ADMIN).status_code == 200


# --- idempotency ---------------------------------------------------------------------------


def test_idempotency_over_http(start_app: StartApp) -> None:
    app = start_app(server=all_slots())
    with httpx.Client(base_url=app.url) as client:

        def post(params: dict[str, str], key: str, slot: str = "primary") -> httpx.Response:
            return client.post(
                "/admin/replay-dlq", params=params, headers={**token(slot), "Idempotency-Key": key}
            )

        created = post({"dry_run": "true", "provider": "acme"}, "deploy-7")
        assert created.status_code == 202
        assert "idempotency_reused" not in created.json()
        job = created.json()["job"]
        wait_for_job(client, job["job_id"])

        for params, key in (
            ({"dry_run": "true", "provider": "acme"}, "deploy-7"),
            ({"dry_run": "True", "provider": " ACME ", "limit": "100"}, "deploy-7"),
        ):
            again = post(params, key)
            assert again.status_code == 200, again.text
            body = again.json()
            assert body["idempotency_reused"] is True
            assert body["job"]["job_id"] == job["job_id"]
            assert body["job"]["status"] == "succeeded"  # returned as it is, not run again
            assert body["request_id"] == again.headers["x-request-id"]

        conflict = "idempotency key already used for different replay parameters"
        for params in (
            {"dry_run": "false", "provider": "acme"},
            {"dry_run": "true", "provider": "globex"},
            {"dry_run": "true", "provider": "acme", "stage": "publish"},
            {"dry_run": "true", "provider": "acme", "tenant": "t1"},
            {"dry_run": "true", "provider": "acme", "limit": "99"},
        ):
            assert_error(post(params, "deploy-7"), 409, conflict)

        # Keys are per token: another caller's identical key is a new job.
        other = post({"dry_run": "true", "provider": "acme"}, "deploy-7", slot="replay")
        assert other.status_code == 202
        assert other.json()["job"]["job_id"] != job["job_id"]
    assert app.metric("tap_admin_replay_jobs_total", stage="reused") == 2
    assert app.metric("tap_admin_replay_jobs_total", stage="conflict") == 5
    assert app.metric("tap_admin_replay_jobs_total", stage="accepted") == 2


# --- listing -------------------------------------------------------------------------------


def test_list_filters_cursor_pagination_and_summary(start_app: StartApp) -> None:
    app = start_app(server=server())
    with httpx.Client(base_url=app.url) as client:
        created = []
        for _ in range(5):
            response = client.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=ADMIN)
            created.append(response.json()["job"]["job_id"])
        for job_id in created:
            wait_for_job(client, job_id)
        queued = queued_job(app)

        seen: list[str] = []
        cursor = ""
        pages = 0
        while True:
            response = client.get(
                "/admin/replay-dlq",
                params={"limit": "2", "cursor": cursor, "status": "succeeded"},
                headers=ADMIN,
            )
            assert response.status_code == 200
            page = response.json()
            pages += 1
            assert (page["status"], page["limit"], page["cursor"]) == ("succeeded", 2, cursor)
            assert page["count"] == len(page["jobs"])
            assert page["summary"] == {
                "queued": 1,
                "running": 0,
                "succeeded": 5,
                "failed": 0,
                "cancelled": 0,
            }
            seen += [job["job_id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert pages == 3
        assert seen == created[::-1]  # newest first

        everything = client.get("/admin/replay-dlq", headers=ADMIN).json()
        assert (everything["status"], everything["limit"], everything["cursor"]) == ("", 50, "")
        assert [job["job_id"] for job in everything["jobs"]] == [queued.job_id, *created[::-1]]
        assert everything["next_cursor"] == ""
        only_queued = client.get("/admin/replay-dlq", params={"status": "queued"}, headers=ADMIN)
        assert [job["status"] for job in only_queued.json()["jobs"]] == ["queued"]
        none = client.get("/admin/replay-dlq", params={"status": "running"}, headers=ADMIN).json()
        assert (none["count"], none["jobs"], none["next_cursor"]) == (0, [], "")

        job = client.get(f"/admin/replay-dlq/{created[0]}", headers=ADMIN).json()["job"]
        assert job["status"] == "succeeded"
        assert {"started_at", "completed_at", "would_replay"} <= set(job)
        queued_view = client.get(f"/admin/replay-dlq/{queued.job_id}", headers=ADMIN).json()
        assert "started_at" not in queued_view["job"]  # unset timestamps are left out
        assert "completed_at" not in queued_view["job"]


# --- cancel and queue caps -----------------------------------------------------------------


def test_cancel_a_queued_job(start_app: StartApp) -> None:
    app = start_app(server=all_slots())
    with httpx.Client(base_url=app.url) as client:
        job = queued_job(app)
        response = client.delete(
            f"/admin/replay-dlq/{job.job_id}",
            headers={**token("cancel"), "X-Admin-Reason": "wrong provider filter"},
        )
        assert response.status_code == 200, response.text
        cancelled = response.json()["job"]
        assert cancelled["status"] == "cancelled"
        assert cancelled["cancel_reason"] == "wrong provider filter"
        assert cancelled["error"] == "cancelled by operator: wrong provider filter"
        assert "completed_at" in cancelled and "started_at" not in cancelled

        message = "replay job cannot be cancelled once running or completed"
        assert_error(client.delete(f"/admin/replay-dlq/{job.job_id}", headers=ADMIN), 409, message)
        finished = client.post("/admin/replay-dlq", params={"dry_run": "1"}, headers=ADMIN)
        finished_id = finished.json()["job"]["job_id"]
        wait_for_job(client, finished_id)
        assert_error(client.delete(f"/admin/replay-dlq/{finished_id}", headers=ADMIN), 409, message)

        listing = client.get("/admin/replay-dlq", headers=ADMIN).json()
        assert listing["summary"]["cancelled"] == 1
    assert app.metric("tap_admin_replay_jobs_total", stage="cancelled") == 1
    assert (
        app.metric("tap_admin_requests_total", endpoint="replay_dlq_cancel", outcome="conflict")
        == 2
    )


def test_queue_cap_per_ip(start_app: StartApp) -> None:
    app = start_app(server=server(admin_replay_max_queued_per_ip=1))
    with httpx.Client(base_url=app.url) as client:
        queued_job(app, ip="127.0.0.1")
        response = client.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=ADMIN)
        assert_error(response, 409, "replay queue limit exceeded for caller scope")
    assert app.metric("tap_admin_replay_jobs_total", stage="queue_limited") == 1


def test_queue_cap_per_token_and_zero_disables_it(start_app: StartApp) -> None:
    capped = start_app(
        server=all_slots(admin_replay_max_queued_per_ip=0, admin_replay_max_queued_per_token=1)
    )
    with httpx.Client(base_url=capped.url) as client:
        queued_job(capped, ip="192.0.2.1", slot="primary")
        response = client.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=ADMIN)
        assert_error(response, 409, "replay queue limit exceeded for caller scope")
        other = client.post(
            "/admin/replay-dlq", params={"dry_run": "true"}, headers=token("secondary")
        )
        assert other.status_code == 202

    unlimited = start_app(
        server=server(admin_replay_max_queued_per_ip=0, admin_replay_max_queued_per_token=0)
    )
    with httpx.Client(base_url=unlimited.url) as client:
        for _ in range(3):
            queued_job(unlimited)
        response = client.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=ADMIN)
        assert response.status_code == 202


# --- poller status and DLQ listing ---------------------------------------------------------


def test_poller_status_is_empty_and_echoes_its_filters(start_app: StartApp) -> None:
    app = start_app(server=server())
    with httpx.Client(base_url=app.url) as client:
        response = client.get(
            "/admin/poller-status",
            params={"provider": " HubSpot ", "tenant": "t1"},
            headers={**ADMIN, "X-Request-ID": "poll-1"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body.pop("generated_at"))
        assert body == {
            "request_id": "poll-1",
            "provider": "HubSpot",
            "tenant": "t1",
            "count": 0,
            "pollers": [],
        }
        plain = client.get("/admin/poller-status", headers=ADMIN).json()
        assert (plain["provider"], plain["tenant"], plain["pollers"]) == ("", "", [])


async def test_dlq_listing_filters_and_pages(start_app: StartApp, private_nats: NatsServer) -> None:
    app = start_app(server=server())
    nc = await nats.connect(private_nats.url)
    js = nc.jetstream()
    for index, (stage, provider, tenant) in enumerate(
        [
            ("publish", "acme", ""),
            ("verify", "acme", ""),
            ("publish", "globex", "t1"),
            ("normalize", "acme", "t1"),
            ("publish", "acme", "t1"),
        ]
    ):
        record = {
            "id": f"dlq_{index}",
            "stage": stage,
            "provider": provider,
            "tenant_id": tenant,
            "request_id": f"req-{index}",
            "reason": "boom",
            "original_subject": "ensemble.tap.x.y.z",
            "original_payload": "e30=",
            "occurred_at": "2026-11-28T00:00:00Z",
        }
        await js.publish(f"ensemble.dlq.{stage}.{provider}", orjson.dumps(record))
    await nc.close()

    async with httpx.AsyncClient(base_url=app.url, headers=ADMIN) as client:
        ids: list[str] = []
        cursor = ""
        while True:
            page = (await client.get("/admin/dlq", params={"limit": 2, "cursor": cursor})).json()
            assert page["summary"] == {"publish": 3, "verify": 1, "normalize": 1}
            ids += [record["id"] for record in page["records"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert ids == ["dlq_4", "dlq_3", "dlq_2", "dlq_1", "dlq_0"]

        acme_t1 = (
            await client.get("/admin/dlq", params={"provider": "ACME", "tenant": "t1"})
        ).json()
        assert [r["id"] for r in acme_t1["records"]] == ["dlq_4", "dlq_3"]
        publish = (
            await client.get("/admin/dlq", params={"stage": "publish", "include_payload": "1"})
        ).json()
        assert [r["id"] for r in publish["records"]] == ["dlq_4", "dlq_2", "dlq_0"]
        assert publish["summary"] == {"publish": 3}
        assert all(r["original_payload"] == "e30=" for r in publish["records"])
        verify = (await client.get("/admin/dlq", params={"stage": "verify"})).json()["records"]
        assert [(r["id"], r["replayable"]) for r in verify] == [("dlq_1", False)]
        assert "original_payload" not in verify[0]


# --- audit log and metrics -----------------------------------------------------------------


OUTCOMES = {
    200: "success",
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "bad_request",
}
# (request id, method, path, headers, log message, status, token slot)
# fmt: off
AUDITED: list[tuple[str, str, str, dict[str, str], str, int, str | None]] = [
    ("audit-ok", "GET", REPLAY, token("read"), "admin replay dlq list fetched", 200, "read"),
    ("audit-401", "GET", REPLAY, {"X-Admin-Token": "nope"}, "admin request unauthorized", 401,
     None),
    ("audit-scope", "POST", REPLAY, token("read"), "admin request unauthorized", 401, None),
    ("audit-400", "POST", f"{REPLAY}?limit=0", ADMIN, "admin replay dlq rejected", 400, "primary"),
    ("audit-404", "GET", f"{REPLAY}/replay_1_1", ADMIN, "admin replay dlq status missing", 404,
     "primary"),
    ("audit-405", "PUT", DLQ, ADMIN, "admin request method not allowed", 405, None),
]
# fmt: on


def test_audit_log_lines_of_a_served_process(tmp_path: Path, private_nats: NatsServer) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
log_level: info
server:
  host: 127.0.0.1
  port: {port}
  admin_token: {TOKENS["primary"]}
  admin_token_read: {TOKENS["read"]}
  admin_rate_limit_per_sec: 1000
  admin_rate_limit_burst: 1000
nats:
  url: {private_nats.url}
""",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [CLI, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("ensemble-tap serve did not become ready")
        with httpx.Client(base_url=url, headers={"User-Agent": "audit-test/1.0"}) as client:
            for request_id, method, path, headers, *_ in AUDITED:
                client.request(method, path, headers={**headers, "X-Request-ID": request_id})
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()

    lines = []
    for raw in output.splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    by_id = {line["request_id"]: line for line in lines if "request_id" in line}
    for request_id, method, path, _, msg, status, slot in AUDITED:
        line = by_id[request_id]
        assert line["msg"] == msg
        assert line["level"] == ("info" if status < 400 else "warning")
        assert (line["method"], line["path"], line["status"]) == (
            method,
            path.split("?")[0],
            status,
        )
        assert line["outcome"] == OUTCOMES[status]
        assert line["requester_ip"] == "127.0.0.1"
        assert line["user_agent"] == "audit-test/1.0"
        assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
        assert line.get("token_slot") == slot
    text = output.decode()
    for secret in (*TOKENS.values(), "nope"):
        assert secret not in text


def test_admin_metrics_are_exposed(start_app: StartApp) -> None:
    app = start_app(server=server())
    with httpx.Client(base_url=app.url) as client:
        created = client.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=ADMIN)
        wait_for_job(client, created.json()["job"]["job_id"])
        client.get("/admin/replay-dlq", headers={"X-Admin-Token": "wrong"})
        exposition = client.get("/metrics").text
    for sample in (
        'tap_admin_requests_total{endpoint="replay_dlq",outcome="success"} 1.0',
        'tap_admin_requests_total{endpoint="replay_dlq_list",outcome="unauthorized"} 1.0',
        'tap_admin_request_duration_seconds_count{endpoint="replay_dlq",outcome="success"} 1.0',
        'tap_admin_request_duration_seconds_bucket{endpoint="replay_dlq",le="+Inf",'
        'outcome="success"} 1.0',
        'tap_admin_replay_jobs_total{stage="accepted"} 1.0',
        'tap_admin_replay_jobs_total{stage="succeeded"} 1.0',
        "tap_admin_replay_jobs_in_flight 0.0",
    ):
        assert sample in exposition, sample
    assert (
        app.metric("tap_admin_requests_total", endpoint="replay_dlq_status", outcome="success") >= 1
    )


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_both_stores_serve_the_api(start_app: StartApp, tmp_path: Path, backend: str) -> None:
    app = start_app(
        server=server(
            admin_replay_store_backend=backend,
            admin_replay_sqlite_path=str(tmp_path / "admin" / "jobs.db"),
        )
    )
    with httpx.Client(base_url=app.url) as client:
        created = client.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=ADMIN)
        assert created.status_code == 202
        assert wait_for_job(client, created.json()["job"]["job_id"])["status"] == "succeeded"
    assert (tmp_path / "admin" / "jobs.db").exists() is (backend == "sqlite")
