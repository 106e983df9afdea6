"""``ensemble-tap send``: build a signed delivery, post it, report the answer, optionally
wait for its events. The typer command in cli.py only gathers the options."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from ensemble_tap.send.bodies import Body, Kind, file_body, kind_of, sample_body
from ensemble_tap.send.delivery import Answer, build, post, webhook_url
from ensemble_tap.send.errors import SendError
from ensemble_tap.send.waiting import Arrived, sent_now, wait_in_store, wait_on_stream

Echo = Callable[[str], None]


@dataclass(slots=True, frozen=True)
class SendOptions:
    provider: str
    url: str
    secret: str
    tenant: str = ""
    base_path: str = "/webhooks"
    event_type: str | None = None
    file: Path | None = None
    expect: int = 202
    wait: bool = False
    nats_url: str | None = None
    admin_url: str | None = None
    admin_token: str = ""
    wait_timeout: float = 10.0


def check(options: SendOptions) -> None:
    """Problems found before anything is sent."""
    if not options.provider.strip():
        raise SendError("PROVIDER must name a configured provider, e.g. stripe or acme")
    if not options.secret:
        raise SendError("no signing secret: pass --secret or set TAP_SEND_SECRET")
    if options.wait and options.expect != 202:
        raise SendError("--wait needs an accepted delivery: leave --expect at 202")
    if options.wait and not options.nats_url and not options.admin_token.strip():
        raise SendError(
            "--wait reads the event back through GET /admin/events, which needs the admin "
            "token (TAP_ADMIN_TOKEN or --admin-token), or from the stream with --nats URL"
        )


def send(options: SendOptions, echo: Echo) -> None:
    """Send one delivery and report it through ``echo``. Raises SendError (exit status 1)
    when it cannot be sent, the answer is not ``expect``, or with ``wait`` its events do not
    arrive."""
    check(options)
    provider = options.provider.strip().lower()
    kind = kind_of(provider)
    now_ns = time.time_ns()
    body = _body(options, kind, now_ns)
    url = webhook_url(options.url, options.base_path, provider, options.tenant.strip())
    delivery = build(kind, url, options.secret, body, now_ns)
    signed_as = "generic HMAC" if kind == "generic" else kind
    echo(
        f"POST {url} ({signed_as}, event type {delivery.event_type or '(from the body)'}, "
        f"{len(delivery.body)} bytes)"
    )
    sent_at = sent_now()
    answer = post(delivery)
    _report(answer, echo)
    if answer.status != options.expect:
        raise SendError(f"expected HTTP {options.expect}, got {answer.status}")
    if options.wait:
        _wait(options, answer, sent_at, echo)


def _body(options: SendOptions, kind: Kind, now_ns: int) -> Body:
    if options.file is not None:
        return file_body(options.file, kind, options.event_type, now_ns)
    return sample_body(kind, options.event_type, now_ns)


def _report(answer: Answer, echo: Echo) -> None:
    request_id = f" (request id {_clean(answer.request_id)})" if answer.request_id else ""
    echo(f"HTTP {answer.status} {answer.reason}{request_id}")
    text = _clean(answer.body.decode("utf-8", errors="replace").strip())
    if text:
        echo(text)


def _wait(options: SendOptions, answer: Answer, sent_at: datetime, echo: Echo) -> None:
    accepted = answer.accepted()
    if not accepted:
        raise SendError("the 202 answer names no event to wait for")
    if options.nats_url:
        arrived = wait_on_stream(options.nats_url, accepted, sent_at, options.wait_timeout)
    else:
        arrived = wait_in_store(
            options.admin_url or options.url, options.admin_token, accepted, options.wait_timeout
        )
    for event in arrived:
        echo(_arrival_line(event, answer.request_id))
        echo(orjson.dumps(event.event).decode())


def _arrival_line(event: Arrived, request_id: str) -> str:
    line = f"arrived: {event.id} in {event.where}"
    if request_id and event.request_id and event.request_id != request_id:
        line += (
            f" (stored from an earlier delivery, request id {event.request_id}: this one "
            "repeated its event id and was dropped as a duplicate)"
        )
    return line


def _clean(text: str) -> str:
    """Server text made safe for a terminal: control characters become spaces."""
    return "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in text)
