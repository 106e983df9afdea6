"""Dead letters and replay jobs: the list with its filters, one record in full, replay (of
the filters or of one record) with a dry-run preview and a required reason, a job's live
progress, cancel."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ensemble_tap.console.context import (
    Refused,
    admin_call,
    admin_read,
    posted,
    quoted,
    reason_of,
    session_of,
    state_of,
)
from ensemble_tap.console.gateway import AdminCall
from ensemble_tap.console.security import SECURITY_HEADERS
from ensemble_tap.console.times import instant, parsed

LETTER_FILTERS = ("stage", "provider", "tenant")
# What a replay form may carry: the list's filters, or one record's sequence.
REPLAY_FILTERS = (*LETTER_FILTERS, "sequence")
RUNNING = ("queued", "running")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# Seconds between refreshes of a page that shows a job still running.
LIVE_EVERY = 1


def nonce() -> str:
    """The Idempotency-Key of one rendered replay form: submitted twice, it is one job."""
    return secrets.token_urlsafe(18)


async def dead_letters(request: Request) -> Response:
    session = await session_of(request)
    query = request.query_params
    filters = {key: query.get(key, "").strip() for key in LETTER_FILTERS}
    since = instant(query.get("since", ""), query.get("tz", ""), "since")
    until = instant(query.get("until", ""), query.get("tz", ""), "until")
    answer = await admin_read(
        request,
        session,
        AdminCall(
            method="GET",
            path="/admin/dlq",
            query={**filters, "limit": "50", "cursor": query.get("cursor", "")},
        ),
    )
    records = [
        record
        for record in answer.body.get("records", [])
        if _within(record.get("occurred_at", ""), since, until)
    ]
    next_cursor = answer.body.get("next_cursor", "")
    next_url = ""
    if next_cursor:
        kept = {key: value for key, value in query.items() if key != "cursor" and value}
        next_url = "/console/dlq?" + urlencode({**kept, "cursor": next_cursor})
    return state_of(request).renderer.page(
        "dlq.html",
        title="Dead letters",
        section="dlq",
        session=session,
        records=records,
        summary=answer.body.get("summary", {}),
        filters=filters,
        since=query.get("since", ""),
        until=query.get("until", ""),
        next_url=next_url,
        nonce=nonce(),
    )


async def dead_letter(request: Request) -> Response:
    """One record: why it failed, the request's headers and body where kept, and a replay
    of this record alone (a dry run first)."""
    session = await session_of(request)
    wanted = request.path_params["record"]
    answer = await admin_call(
        request, session, AdminCall(method="GET", path=f"/admin/dlq/{quoted(wanted)}")
    )
    if answer.status == 404:
        raise Refused(404, f"no dead letter {wanted[:80]!r} (replayed, or aged out of the DLQ)")
    if not answer.ok:
        raise Refused(answer.status, answer.error)
    record = answer.body["record"]
    return state_of(request).renderer.page(
        "dead_letter.html",
        title=f"Dead letter {record['sequence']}",
        section="dlq",
        session=session,
        record=record,
        headers=sorted((record.get("request_meta") or {}).get("headers", {}).items()),
        nonce=nonce(),
    )


def _within(occurred_at: str, since: Any, until: Any) -> bool:
    if since is None and until is None:
        return True
    moment = parsed(occurred_at)
    if moment is None:
        return False
    return (since is None or moment >= since) and (until is None or moment < until)


async def create_replay(request: Request) -> Response:
    session, form = await posted(request)
    reason = reason_of(form)
    dry_run = form.get("dry_run", "") == "true"
    answer = await admin_call(
        request,
        session,
        AdminCall(
            method="POST",
            path="/admin/replay-dlq",
            query={
                "dry_run": "true" if dry_run else "false",
                "limit": form.get("limit", "").strip(),
                **{key: form.get(key, "").strip() for key in REPLAY_FILTERS},
            },
            reason=reason,
            idempotency_key=form.get("nonce", "")[:64],
        ),
    )
    if not answer.ok:
        raise Refused(answer.status, answer.error)
    job_id = answer.body["job"]["job_id"]
    return RedirectResponse(
        f"/console/jobs/{quoted(job_id)}", status_code=303, headers=SECURITY_HEADERS
    )


async def jobs(request: Request) -> Response:
    session = await session_of(request)
    status = request.query_params.get("status", "").strip()
    answer = await admin_read(
        request,
        session,
        AdminCall(
            method="GET",
            path="/admin/replay-dlq",
            query={"status": status, "cursor": request.query_params.get("cursor", "")},
        ),
    )
    listed = answer.body.get("jobs", [])
    next_cursor = answer.body.get("next_cursor", "")
    next_url = (
        "/console/jobs?" + urlencode({"status": status, "cursor": next_cursor})
        if next_cursor
        else ""
    )
    return state_of(request).renderer.page(
        "jobs.html",
        title="Replay jobs",
        section="jobs",
        session=session,
        jobs=listed,
        summary=answer.body.get("summary", {}),
        status=status,
        statuses=JOB_STATUSES,
        next_url=next_url,
        refresh=LIVE_EVERY if any(job["status"] in RUNNING for job in listed) else 0,
    )


async def job(request: Request) -> Response:
    session = await session_of(request)
    job_id = request.path_params["job_id"]
    answer = await admin_read(
        request, session, AdminCall(method="GET", path=f"/admin/replay-dlq/{quoted(job_id)}")
    )
    shown = answer.body["job"]
    return state_of(request).renderer.page(
        "job.html",
        title=f"Replay job {shown['job_id']}",
        section="jobs",
        session=session,
        job=shown,
        running=shown["status"] in RUNNING,
        refresh=LIVE_EVERY if shown["status"] in RUNNING else 0,
        nonce=nonce(),
    )


async def cancel_job(request: Request) -> Response:
    session, form = await posted(request)
    job_id = request.path_params["job_id"]
    answer = await admin_call(
        request,
        session,
        AdminCall(
            method="DELETE", path=f"/admin/replay-dlq/{quoted(job_id)}", reason=reason_of(form)
        ),
    )
    if not answer.ok:
        raise Refused(answer.status, answer.error)
    return RedirectResponse(
        f"/console/jobs/{quoted(job_id)}", status_code=303, headers=SECURITY_HEADERS
    )
