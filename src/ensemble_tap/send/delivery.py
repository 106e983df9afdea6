"""One signed delivery: where it goes, what it carries, and the service's answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from ensemble_tap import __version__
from ensemble_tap.send.bodies import Body, Kind
from ensemble_tap.send.errors import SendError
from ensemble_tap.send.signing import provider_headers

HTTP_TIMEOUT = 10.0
USER_AGENT = f"ensemble-tap-send/{__version__}"


@dataclass(slots=True, frozen=True)
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]
    event_type: str


@dataclass(slots=True, frozen=True)
class Accepted:
    """One event the service stored, as its 202 answer names it."""

    id: str
    subject: str


@dataclass(slots=True, frozen=True)
class Answer:
    status: int
    reason: str
    request_id: str
    body: bytes

    def accepted(self) -> list[Accepted]:
        """The events of a 202 answer (a HubSpot batch names each); [] for anything else."""
        if self.status != 202:
            return []
        try:
            answer = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(answer, dict):
            return []
        listed = answer.get("events")
        items: list[Any] = listed if isinstance(listed, list) else [answer]
        return [
            Accepted(str(item["id"]), str(item["subject"]))
            for item in items
            if isinstance(item, dict) and item.get("id") and item.get("subject")
        ]


def webhook_url(base_url: str, base_path: str, provider: str, tenant: str = "") -> str:
    """``BASE`` + ``server.base_path`` + ``/PROVIDER[/TENANT]``; a path in BASE (a proxy's
    prefix) is kept."""
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SendError(f"--url must be the service's http:// or https:// URL, not {base_url!r}")
    if parts.query or parts.fragment:
        raise SendError(f"--url must not have a query or fragment: {base_url!r}")
    path = "/" + base_path.strip().strip("/")
    url = f"{base}{path}/{quote(provider, safe='')}"
    return f"{url}/{quote(tenant, safe='')}" if tenant else url


def build(kind: Kind, url: str, secret: str, body: Body, now_ns: int) -> Delivery:
    headers = {"User-Agent": USER_AGENT}
    seen_url = url
    if kind == "hubspot":
        # HubSpot signs the URL it calls, always https; the service assumes https unless a
        # proxy says otherwise in X-Forwarded-Proto, so a plain-http URL says so itself.
        parts = urlsplit(url)
        if parts.scheme == "http":
            headers["X-Forwarded-Proto"] = "http"
        sent = httpx.Request("POST", url)  # the Host header and raw path httpx will send
        seen_url = f"{parts.scheme}://{sent.headers['host']}{sent.url.raw_path.decode('ascii')}"
    headers.update(provider_headers(kind, secret, body.content, body.event_type, seen_url, now_ns))
    return Delivery(url, body.content, headers, body.event_type)


def post(delivery: Delivery, timeout: float = HTTP_TIMEOUT) -> Answer:
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.post(delivery.url, content=delivery.body, headers=delivery.headers)
    except httpx.ConnectError as exc:
        raise SendError(
            f"cannot connect to {delivery.url} ({_one_line(exc)}): is the service running "
            "there? Check --url"
        ) from None
    except httpx.TimeoutException:
        raise SendError(f"{delivery.url} did not answer within {timeout:g}s") from None
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise SendError(f"cannot send to {delivery.url}: {_one_line(exc)}") from None
    return Answer(
        response.status_code,
        response.reason_phrase,
        response.headers.get("x-request-id", ""),
        response.content,
    )


def _one_line(value: object) -> str:
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= 200 else text[:199] + "…"
