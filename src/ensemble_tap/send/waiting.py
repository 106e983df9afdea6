"""``--wait``: confirm that the events of a 202 answer arrived, and return them.

Two places to look: the stream itself (``--nats URL``: an ordered consumer on each event's
subject, from shortly before the send) or the events the ClickHouse sink stored (``GET
/admin/events?id=…``, polled). Events are matched by their CloudEvent id, not only by the
request id: a delivery JetStream dropped as a duplicate of an earlier one is stored once,
with the earlier delivery's request id.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ensemble_tap.send.delivery import Accepted
from ensemble_tap.send.errors import SendError

# How far before the send the stream is read: the NATS server's clock may differ from ours.
CLOCK_MARGIN = timedelta(minutes=2)
STORE_POLL_INTERVAL = 0.3  # below the admin API's default 5 requests/s
NATS_CONNECT_TIMEOUT = 5.0


@dataclass(slots=True, frozen=True)
class Arrived:
    id: str
    where: str  # the subject on the stream, or "the event store"
    request_id: str
    event: dict[str, Any]


def wait_on_stream(
    nats_url: str, accepted: list[Accepted], sent_at: datetime, timeout: float
) -> list[Arrived]:
    return asyncio.run(_wait_on_stream(nats_url, accepted, sent_at, timeout))


async def _wait_on_stream(
    nats_url: str, accepted: list[Accepted], sent_at: datetime, timeout: float
) -> list[Arrived]:
    import nats
    import nats.errors
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    async def quiet(*_: object) -> None:
        """nats-py logs connection errors with tracebacks by default; ours are one line."""

    try:
        nc = await nats.connect(
            nats_url,
            connect_timeout=NATS_CONNECT_TIMEOUT,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
            disconnected_cb=quiet,
            closed_cb=quiet,
        )
    except Exception as exc:
        raise SendError(f"cannot connect to NATS at {nats_url}: {_text(exc)}") from None
    deadline = time.monotonic() + timeout
    pending = {event.id: event for event in accepted}
    found: list[Arrived] = []
    try:
        js = nc.jetstream()
        for subject in dict.fromkeys(event.subject for event in accepted):
            try:
                sub = await js.subscribe(
                    subject,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.BY_START_TIME,
                    config=ConsumerConfig(opt_start_time=sent_at - CLOCK_MARGIN),
                )
            except NotFoundError:
                raise SendError(
                    f"no JetStream stream on {nats_url} holds subject {subject}: "
                    "is --nats the service's NATS?"
                ) from None
            try:
                while any(event.subject == subject for event in pending.values()):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        msg = await sub.next_msg(timeout=remaining)
                    except nats.errors.TimeoutError:
                        break
                    event = _json_object(msg.data)
                    if pending.pop(str(event.get("id", "")), None) is not None:
                        request_id = (msg.headers or {}).get("X-Request-ID", "")
                        found.append(Arrived(str(event["id"]), msg.subject, request_id, event))
            finally:
                await sub.unsubscribe()
    except SendError:
        raise
    except Exception as exc:  # a NATS failure mid-way: still one line
        raise SendError(f"reading the stream on {nats_url} failed: {_text(exc)}") from None
    finally:
        await nc.close()
    if pending:
        raise SendError(_not_arrived(pending, f"on the stream at {nats_url}", timeout))
    return found


def wait_in_store(
    admin_url: str, token: str, accepted: list[Accepted], timeout: float
) -> list[Arrived]:
    """Poll ``GET /admin/events?id=…`` until every event is stored (the sink writes in
    batches, every ``clickhouse.flush_interval``). Admin API errors end the command with
    the admin CLI's one-line messages."""
    from ensemble_tap.admin_cli import AdminClient

    deadline = time.monotonic() + timeout
    pending = {event.id: event for event in accepted}
    found: list[Arrived] = []
    with AdminClient(admin_url, token) as client:
        while True:
            for event_id in list(pending):
                answer = client.call(
                    "GET", "/admin/events", {"id": event_id}, wait_when_limited=True
                )
                rows = answer.get("events")
                if isinstance(rows, list) and rows and isinstance(rows[0], dict):
                    pending.pop(event_id)
                    row: dict[str, Any] = rows[0]
                    found.append(
                        Arrived(event_id, "the event store", str(row.get("request_id", "")), row)
                    )
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(STORE_POLL_INTERVAL)
    if pending:
        raise SendError(
            _not_arrived(pending, f"in the event store of {admin_url} (GET /admin/events)", timeout)
            + "; the ClickHouse sink writes every clickhouse.flush_interval"
        )
    return found


def sent_now() -> datetime:
    return datetime.now(UTC)


def _not_arrived(pending: dict[str, Accepted], where: str, timeout: float) -> str:
    names = ", ".join(f"{event.id} ({event.subject})" for event in pending.values())
    return f"not seen {where} within {timeout:g}s: {names}"


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
