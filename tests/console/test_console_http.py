"""The console's security without a browser: the session cookie, sign-in, CSRF and origin
checks, a read-only token, a token that stops working, session expiry."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ensemble_tap.console.sessions import MemorySessions
from ensemble_tap.workers.proxy import forwarded_to_primary
from tests.support.app import RunningApp
from tests.support.configs import make_config, problems_of
from tests.support.nats_server import NatsServer

FULL = "console-full-token"
READ = "console-read-token"
REPLAY = "console-replay-token"
SERVER = {
    "admin_token": FULL,
    "admin_token_read": READ,
    "admin_token_replay": REPLAY,
    "admin_rate_limit_per_sec": 1000,
    "admin_rate_limit_burst": 1000,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """One service (and nats-server: the DLQ stream's subjects are fixed) for the module."""
    directory = tmp_path_factory.mktemp("console-http")
    nats = NatsServer(directory / "nats").start()
    config = make_config(
        nats.url, str(directory / "data"), providers={"acme": {"secret": "s"}}, server=SERVER
    )
    app = RunningApp(config).start()
    yield app
    app.stop()
    nats.stop()


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@contextlib.contextmanager
def signed_in(app: RunningApp, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url) as client:
        form = client.get("/console/login")
        answer = client.post(
            "/console/login",
            data={"csrf": csrf_in(form.text), "token": token, "next": "/console"},
        )
        assert answer.status_code == 303, answer.text
        yield client


def test_pages_need_a_session_and_sign_in_sets_a_strict_httponly_cookie(
    served: RunningApp,
) -> None:
    with httpx.Client(base_url=served.url) as client:
        first = client.get("/console/dlq?stage=publish")
        form = client.get("/console/login")
        wrong = client.post(
            "/console/login", data={"csrf": csrf_in(form.text), "token": "nope", "next": ""}
        )
        form = client.get("/console/login")
        right = client.post(
            "/console/login",
            data={"csrf": csrf_in(form.text), "token": FULL, "next": "/console/dlq"},
        )
        page = client.get("/console/dlq")

    assert first.status_code == 303
    assert first.headers["location"] == "/console/login?next=%2Fconsole%2Fdlq%3Fstage%3Dpublish"
    assert wrong.status_code == 401 and "not an admin token" in wrong.text
    assert right.status_code == 303 and right.headers["location"] == "/console/dlq"
    cookie = next(c for c in right.headers.get_list("set-cookie") if c.startswith("tap_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Max-Age=28800" in cookie and "Secure" not in cookie  # plain HTTP here
    assert page.status_code == 200
    assert FULL not in page.text  # the token never reaches the page
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_sign_in_goes_only_to_console_pages(served: RunningApp) -> None:
    with httpx.Client(base_url=served.url) as client:
        form = client.get("/console/login")
        answer = client.post(
            "/console/login",
            data={"csrf": csrf_in(form.text), "token": FULL, "next": "//evil.example/x"},
        )
    assert answer.headers["location"] == "/console"


def test_a_sign_in_form_without_its_cookie_is_refused(served: RunningApp) -> None:
    with httpx.Client(base_url=served.url) as client:
        csrf = csrf_in(client.get("/console/login").text)
        client.cookies.clear()
        answer = client.post("/console/login", data={"csrf": csrf, "token": FULL})
    assert answer.status_code == 403
    assert "tap_console=" not in answer.headers.get("set-cookie", "")


def test_posts_need_the_sessions_csrf_token_and_this_sites_origin(served: RunningApp) -> None:
    with signed_in(served, FULL) as client:
        csrf = csrf_in(client.get("/console/dlq").text)
        form = {"csrf": csrf, "reason": "a good reason here", "dry_run": "true"}
        no_token = client.post("/console/replay", data={**form, "csrf": ""})
        other_origin = client.post(
            "/console/replay", data=form, headers={"Origin": "http://evil.example"}
        )
        other_site = client.post(
            "/console/replay", data=form, headers={"Sec-Fetch-Site": "cross-site"}
        )
        no_reason = client.post("/console/replay", data={**form, "reason": " "})
        jobs = client.get("/console/jobs").text
        same_origin = client.post("/console/replay", data=form, headers={"Origin": served.url})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    assert other_origin.status_code == 403 and "cross-site" in other_origin.text
    assert other_site.status_code == 403 and "Sec-Fetch-Site: cross-site" in other_site.text
    assert no_reason.status_code == 400 and "reason is required" in no_reason.text
    assert "No replay jobs" in jobs  # nothing refused reached the admin API
    assert same_origin.status_code == 303
    assert same_origin.headers["location"].startswith("/console/jobs/replay_")


def test_a_read_only_token_sees_no_actions_and_cannot_post_them(served: RunningApp) -> None:
    with signed_in(served, READ) as client:
        page = client.get("/console/dlq")
        refused = client.post(
            "/console/replay",
            data={
                "csrf": csrf_in(page.text),
                "reason": "trying anyway, read only",
                "dry_run": "true",
            },
        )
    assert page.status_code == 200
    assert 'action="/console/replay"' not in page.text
    assert refused.status_code == 403
    assert "does not grant this action" in refused.text


def test_sign_out_ends_the_session(served: RunningApp) -> None:
    with signed_in(served, FULL) as client:
        cookie = client.cookies["tap_console"]
        out = client.post("/console/logout", data={"csrf": csrf_in(client.get("/console").text)})
        client.cookies.set("tap_console", cookie, path="/console")
        after = client.get("/console")
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert after.status_code == 303 and after.headers["location"] == "/console/login"


def test_a_session_whose_token_was_rotated_away_signs_in_again(served: RunningApp) -> None:
    with signed_in(served, REPLAY) as client:
        before = client.get("/console/jobs")
        server = served.config.server.model_copy(update={"admin_token_replay": "rotated-token"})
        served.app.apply_secrets(served.config.model_copy(update={"server": server}))
        try:
            after = client.get("/console/jobs")
        finally:
            served.app.apply_secrets(served.config)
    assert before.status_code == 200
    assert after.status_code == 303
    assert after.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs"


async def test_sessions_expire_after_their_ttl() -> None:
    now = [1000.0]
    store = MemorySessions(60.0, clock=lambda: now[0])
    session = await store.create("token", frozenset({"read"}))
    assert await store.get(session.id) == session
    now[0] += 59.9
    assert await store.get(session.id) == session
    now[0] += 0.2
    assert await store.get(session.id) is None
    assert len(store) == 0
    assert await store.get("") is None


def test_console_enabled_false_serves_no_console(private_nats: NatsServer, tmp_path: Path) -> None:
    config = make_config(
        private_nats.url,
        str(tmp_path / "data"),
        server={**SERVER, "console_enabled": False},
    )
    app = RunningApp(config).start()
    try:
        with httpx.Client(base_url=app.url) as client:
            console = client.get("/console/login")
            admin = client.get("/admin/poller-status", headers={"X-Admin-Token": FULL})
    finally:
        app.stop()
    assert console.status_code == 404
    assert admin.status_code == 200


def test_console_keys_are_checked(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server:\n  console_session_ttl: 10s\n")
    assert "console_session_ttl" in problem and "between 1m and 7d" in problem
    [problem] = problems_of(tmp_path, "server:\n  base_path: /console\n")
    assert "collides with the service's own routes" in problem


def test_workers_forward_the_console_to_the_primary() -> None:
    assert forwarded_to_primary("/console")
    assert forwarded_to_primary("/console/dlq")
    assert not forwarded_to_primary("/consoles")


def test_a_sign_in_holds_on_every_admin_replica_sharing_nats(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    """With replay jobs in NATS the console's sessions are there too: signed in through one
    admin replica, an operator is signed in on the other, and signed out of both at once."""
    server = {**SERVER, "admin_replay_store_backend": "nats"}
    replicas = [
        RunningApp(
            make_config(private_nats.url, str(tmp_path / name), server=server),
            roles=frozenset({"admin"}),
        ).start()
        for name in ("a", "b")
    ]
    try:
        with signed_in(replicas[0], FULL) as first:
            cookies = first.cookies
            with httpx.Client(base_url=replicas[1].url, cookies=cookies) as second:
                page = second.get("/console/jobs")
                assert page.status_code == 200, page.text
                assert FULL not in page.text
                signed_out = second.post("/console/logout", data={"csrf": csrf_in(page.text)})
                assert signed_out.status_code == 303
            again = first.get("/console/jobs")
            assert again.status_code == 303
            assert again.headers["location"].startswith("/console/login")
    finally:
        for replica in replicas:
            replica.stop()
