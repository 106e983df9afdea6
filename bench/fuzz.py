"""Hostile-input run: generated deliveries for every provider, most of them signed exactly
as the provider signs (so extraction, normalisation and publishing run on them), through
the service's own webhook handler, plus malformed raw HTTP against the served port.

The finding is any 5xx or any exception escaping the handler: nothing a sender controls may
produce either. Each finding is written with its request (base64) to
``bench/results/fuzz-<time>.jsonl`` so it can be replayed; the exit status is 1 when there
is any.

    .venv/bin/python bench/fuzz.py                       # 1,000,000 deliveries + 20,000 raw
    .venv/bin/python bench/fuzz.py --requests 20000 --seed 7

Everything runs against a real nats-server (memory storage, a bounded stream).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import json
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ensemble_tap.app import TapApp, TapServer, uvicorn_config
from ensemble_tap.bus.embedded import free_port
from ensemble_tap.config.models import Config
from ensemble_tap.observability import configure_logging
from proc import nats_server

SECRET = "fuzz-secret"
RESULTS = Path(__file__).parent / "results"
PROVIDERS = ("stripe", "github", "hubspot", "linear", "shopify", "acme")
GITHUB_EVENTS = ("push", "issues", "issue_comment", "pull_request", "release", "ping", "")
SHOPIFY_TOPICS = ("orders/create", "products/update", "customers/delete", "app/uninstalled")
HUBSPOT_TYPES = ("contact.creation", "deal.propertyChange", "object.creation", "company.deletion")


def config_for(nats_url: str, data_dir: str) -> Config:
    return Config.model_validate(
        {
            "data_dir": data_dir,
            "log_level": "error",
            "server": {"host": "127.0.0.1", "port": free_port()},
            "nats": {
                "url": nats_url,
                "stream": "FUZZ",
                "stream_storage": "memory",
                "stream_max_msgs": 20_000,
                "publish_timeout": "3s",
            },
            "providers": {
                "stripe": {"secret": SECRET},
                "github": {"secret": SECRET, "signature_versions": ["sha256", "sha1"]},
                "hubspot": {"client_secret": SECRET, "signature_versions": ["v1", "v2", "v3"]},
                "linear": {"secret": SECRET},
                "shopify": {"secret": SECRET},
                "acme": {"secret": SECRET, "tenants": {"t1": {"secret": SECRET}}},
            },
        }
    )


class Generator:
    """Deliveries built from each provider's documented shape, then mutated."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # ------------------------------------------------------------------ values

    def text(self) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.5:
            return "".join(rng.choice("abcdefXYZ0123._-/ :") for _ in range(rng.randint(0, 24)))
        if choice < 0.7:
            return "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 16)))
        if choice < 0.8:
            return "x" * rng.choice((255, 256, 1024, 4096, 70_000))
        if choice < 0.9:
            return rng.choice(("", " ", "\t", "\n", "\x00", "..", ".", "*", ">", "a.b.c"))
        return "".join(chr(rng.randint(0, 0x7F)) for _ in range(rng.randint(1, 40)))

    def scalar(self) -> Any:
        rng = self.rng
        return rng.choice(
            (
                None,
                True,
                False,
                rng.randint(-(2**70), 2**70),
                10 ** rng.randint(18, 400),
                rng.random() * 10 ** rng.randint(-5, 300),
                self.text(),
                rng.randint(0, 2**31),
                "2026-12-04T10:00:00Z",
                "2026-13-45T99:99:99Z",
            )
        )

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        if depth > 3 or rng.random() < 0.5:
            return self.scalar()
        if rng.random() < 0.5:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.text()[:12]: self.value(depth + 1) for _ in range(rng.randint(0, 4))}

    def mutate(self, document: Any) -> Any:
        """Replace a few members (at any depth) by generated values, or wrap the whole."""
        rng = self.rng
        for _ in range(rng.randint(0, 3)):
            node = document
            path: list[Any] = []
            while isinstance(node, dict | list) and node and rng.random() < 0.7:
                key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
                path.append((node, key))
                node = node[key]
            if path:
                parent, key = path[-1]
                parent[key] = self.value()
        return document

    def nest(self, text: str) -> str:
        """Wrap a JSON text in arrays/objects a few hundred to thousands of levels deep."""
        depth = self.rng.choice((200, 900, 1000, 1023, 1024, 1025, 3000))
        kinds = [self.rng.random() < 0.5 for _ in range(depth)]
        opening = "".join("[" if array else '{"a":' for array in kinds)
        closing = "".join("]" if array else "}" for array in reversed(kinds))
        return opening + text + closing

    def body(self, document: Any) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.9:
            text = json.dumps(self.mutate(document), ensure_ascii=rng.random() < 0.5)
            if rng.random() < 0.02:
                text = self.nest(text)
            try:
                return text.encode()
            except UnicodeEncodeError:  # a lone surrogate made by chr()
                return text.encode("utf-8", "surrogatepass")
        if roll < 0.95:
            return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 200)))
        if roll < 0.98:
            return b'{"id": "' + b"y" * rng.choice((10_000, 500_000, 1_040_000)) + b'"}'
        return json.dumps(document).encode()[: rng.randint(0, 50)]

    def header_value(self, good: str) -> str:
        rng = self.rng
        if rng.random() < 0.85:
            return good
        return rng.choice(
            (
                "",
                " " + good + " ",
                good * rng.randint(2, 40),
                "z" * rng.choice((129, 256, 4096, 65_536)),
                "é\u00ff" + good,
                self.text(),
            )
        )

    # ------------------------------------------------------------------ providers

    def delivery(self) -> tuple[str, dict[str, str], bytes, str]:
        """(path, headers, body, provider)"""
        provider = self.rng.choice(PROVIDERS)
        build: Callable[[], tuple[str, dict[str, str], bytes]] = getattr(self, provider)
        path, headers, body = build()
        if self.rng.random() < 0.05:
            path = self.rng.choice(
                (path + "/" + self.text().replace("/", "%2F").replace(" ", "%20"), path + "//")
            )
        return path, headers, body, provider

    def _good(self) -> bool:
        return self.rng.random() < 0.85

    def stripe(self) -> tuple[str, dict[str, str], bytes]:
        now = int(time.time())
        document = {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": self.rng.choice(("invoice.paid", "customer.created", "v1.billing.meter")),
            "created": now,
            "data": {"object": {"id": f"in_{uuid.uuid4().hex[:10]}", "object": "invoice"}},
        }
        if self.rng.random() < 0.2:
            document = {
                "id": f"evt_{uuid.uuid4().hex}",
                "object": "v2.core.event",
                "type": "v1.billing.meter.error_report_triggered",
                "created": datetime.now(UTC).isoformat(),
                "related_object": {"id": "mtr_1", "type": "billing.meter"},
            }
        body = self.body(document)
        timestamp = now if self._good() else now - 10_000
        signature = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, "sha256")
        value = f"t={timestamp},v1={signature.hexdigest()}" if self._good() else self.text()
        return "/webhooks/stripe", {"Stripe-Signature": value}, body

    def github(self) -> tuple[str, dict[str, str], bytes]:
        document = {
            "action": self.rng.choice(("opened", "created", "deleted", "")),
            "ref": "refs/heads/main",
            "deleted": self.rng.random() < 0.2,
            "after": "0" * 40,
            "issue": {"id": 1, "number": 2},
            "comment": {"id": 3},
            "repository": {"id": 4, "full_name": "o/r"},
            "installation": {"id": 5},
        }
        body = self.body(document)
        if self.rng.random() < 0.1:  # the form-encoded variant
            body = b"payload=" + body
        digest = hmac.new(SECRET.encode(), body, "sha256").hexdigest()
        headers = {
            "X-GitHub-Event": self.header_value(self.rng.choice(GITHUB_EVENTS)),
            "X-GitHub-Delivery": self.header_value(str(uuid.uuid4())),
            "X-GitHub-Hook-ID": self.header_value(str(self.rng.randint(1, 10**9))),
            "X-Hub-Signature-256": "sha256=" + digest if self._good() else self.text(),
            "Content-Type": "application/x-www-form-urlencoded"
            if body.startswith(b"payload=")
            else "application/json",
        }
        return "/webhooks/github", headers, body

    def hubspot(self) -> tuple[str, dict[str, str], bytes]:
        events = [
            {
                "eventId": self.rng.randint(1, 10**12),
                "subscriptionId": self.rng.randint(1, 10**6),
                "portalId": self.rng.randint(1, 10**6),
                "occurredAt": int(time.time() * 1000),
                "subscriptionType": self.rng.choice(HUBSPOT_TYPES),
                "objectId": self.rng.randint(1, 10**9),
                "objectTypeId": self.rng.choice(("0-1", "0-2", "0-3", "2-123", "")),
                "propertyName": "amount",
                "propertyValue": "2",
            }
            for _ in range(self.rng.choice((1, 1, 2, 5, 100)))
        ]
        body = self.body(events)
        query = self.rng.choice(("", "?a=1", "?q=%20x%2Fy", "?%zz"))
        path = "/webhooks/hubspot" + query
        timestamp = str(int(time.time() * 1000))
        signed = b"POST" + f"https://fuzz.example{path}".encode() + body + timestamp.encode()
        v3 = base64.b64encode(hmac.new(SECRET.encode(), signed, "sha256").digest()).decode()
        headers = {"Host": "fuzz.example", "X-HubSpot-Request-Timestamp": timestamp}
        if self.rng.random() < 0.8:
            headers["X-HubSpot-Signature-v3"] = v3 if self._good() else self.text()
        else:
            legacy = hashlib.sha256(SECRET.encode() + body).hexdigest()
            headers["X-HubSpot-Signature"] = legacy
            headers["X-HubSpot-Signature-Version"] = self.rng.choice(("v1", "v2", "v9"))
        return path, headers, body

    def linear(self) -> tuple[str, dict[str, str], bytes]:
        document = {
            "action": self.rng.choice(("create", "update", "remove")),
            "type": self.rng.choice(("Issue", "Comment", "Project")),
            "data": {"id": str(uuid.uuid4()), "updatedAt": datetime.now(UTC).isoformat()},
            "createdAt": datetime.now(UTC).isoformat(),
            "webhookTimestamp": int(time.time() * 1000),
        }
        body = self.body(document)
        signature = hmac.new(SECRET.encode(), body, "sha256").hexdigest()
        headers = {
            "Linear-Signature": signature if self._good() else self.text(),
            "Linear-Delivery": self.header_value(str(uuid.uuid4())),
            "Linear-Event": self.header_value("Issue"),
        }
        return "/webhooks/linear", headers, body

    def shopify(self) -> tuple[str, dict[str, str], bytes]:
        document = {"id": self.rng.randint(1, 10**12), "updated_at": "2026-12-04T10:00:00-05:00"}
        body = self.body(document)
        digest = base64.b64encode(hmac.new(SECRET.encode(), body, "sha256").digest()).decode()
        headers = {
            "X-Shopify-Hmac-Sha256": digest if self._good() else self.text(),
            "X-Shopify-Topic": self.header_value(self.rng.choice(SHOPIFY_TOPICS)),
            "X-Shopify-Webhook-Id": self.header_value(str(uuid.uuid4())),
            "X-Shopify-Event-Id": self.header_value(str(uuid.uuid4())),
            "X-Shopify-Triggered-At": self.header_value("2026-12-04T15:00:00.123Z"),
        }
        return "/webhooks/shopify", headers, body

    def acme(self) -> tuple[str, dict[str, str], bytes]:
        document = {"id": f"inv_{self.rng.randint(1, 10**9)}", "timestamp": "2026-12-04T10:00Z"}
        body = self.body(document)
        digest = hmac.new(SECRET.encode(), body, "sha256").hexdigest()
        headers = {
            "X-Signature": "sha256=" + digest if self._good() else self.text(),
            "X-Event-Type": self.header_value("invoice.paid"),
            "X-Event-Id": self.header_value(f"evt_{uuid.uuid4().hex}"),
            "X-Request-ID": self.header_value(f"req-{uuid.uuid4().hex[:12]}"),
        }
        path = "/webhooks/acme/t1" if self.rng.random() < 0.3 else "/webhooks/acme"
        return path, headers, body


def scope_for(path: str, headers: dict[str, str]) -> dict[str, Any]:
    raw_path, _, query = path.partition("?")
    encoded = [
        (k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers.items()
    ]
    if not any(name == b"host" for name, _ in encoded):
        encoded.append((b"host", b"fuzz.example"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "headers": encoded,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


async def call(app: TapApp, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    chunks = (
        [body] if len(body) < 4096 else [body[i : i + 65536] for i in range(0, len(body), 65536)]
    )
    queue = collections.deque(chunks)
    sent: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        chunk = queue.popleft() if queue else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    await app.asgi(scope_for(path, headers), receive, send)  # type: ignore[arg-type]
    return sent["status"], sent["body"]


RAW_REQUESTS = (
    b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabc",
    b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
    b"POST /webhooks/%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\n folded: header\r\n\r\n",
    b"POST /webhooks/acme HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    b"GET /webhooks/stripe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
)


def raw_http(port: int, rng: random.Random, count: int) -> collections.Counter[str]:
    """Malformed and mutated raw requests; counts the status line class of each answer."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        request = bytearray(rng.choice(RAW_REQUESTS))
        for _ in range(rng.randint(0, 3)):
            if request:
                request[rng.randrange(len(request))] = rng.randint(0, 255)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                sock.sendall(bytes(request))
                sock.shutdown(socket.SHUT_WR)
                answer = sock.recv(64)
            except OSError:
                answer = b""
        status = answer[9:12].decode("latin-1") if answer.startswith(b"HTTP/1.") else "closed"
        seen[status[0] + "xx" if status[:1].isdigit() else status] += 1
    return seen


async def run(args: argparse.Namespace) -> int:
    configure_logging("error")
    RESULTS.mkdir(exist_ok=True)
    findings_path = RESULTS / f"fuzz-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.jsonl"
    statuses: collections.Counter[int] = collections.Counter()
    per_provider: collections.Counter[str] = collections.Counter()
    findings = 0
    with tempfile.TemporaryDirectory() as root, nats_server(Path(root) / "nats") as (url, _):
        app = TapApp(config_for(url, str(Path(root) / "data")))
        await app.start()
        await app.wait_ready()
        generator = Generator(args.seed)
        started = time.monotonic()
        with findings_path.open("w") as findings_file:

            async def one() -> None:
                nonlocal findings
                path, headers, body, provider = generator.delivery()
                try:
                    status, answer = await call(app, path, headers, body)
                except Exception as exc:  # a crash: the finding we look for
                    status, answer = -1, repr(exc).encode()
                statuses[status] += 1
                if status >= 500 or status < 0:
                    findings += 1
                    per_provider[provider] += 1
                    record = {
                        "status": status,
                        "answer": answer[:500].decode("latin-1"),
                        "path": path,
                        "headers": {k: v[:2000] for k, v in headers.items()},
                        "body_b64": base64.b64encode(body[:200_000]).decode(),
                        "body_length": len(body),
                    }
                    findings_file.write(json.dumps(record) + "\n")

            done = 0
            while done < args.requests:
                batch = min(args.concurrency, args.requests - done)
                await asyncio.gather(*(one() for _ in range(batch)))
                done += batch
                if done % 50_000 < batch:
                    rate = done / (time.monotonic() - started)
                    print(
                        f"{done:>9,} deliveries  {rate:,.0f}/s  5xx/crashes {findings}", flush=True
                    )
        elapsed = time.monotonic() - started
        server = TapServer(uvicorn_config(app, host="127.0.0.1", port=free_port()))
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
            await asyncio.sleep(0.01)
        raw = await asyncio.to_thread(
            raw_http, server.config.port, random.Random(args.seed), args.http_requests
        )
        server.should_exit = True
        await serving
        await app.stop()
    raw_5xx = raw.get("5xx", 0)
    print(f"\ndeliveries: {args.requests:,} in {elapsed:.0f} s ({args.requests / elapsed:,.0f}/s)")
    print("statuses:", dict(sorted(statuses.items())))
    print(f"raw HTTP requests: {args.http_requests:,}: {dict(raw)}")
    print(f"5xx or crashes: {findings} (by provider {dict(per_provider)}); raw 5xx: {raw_5xx}")
    if findings:
        print(f"findings with their requests: {findings_path}")
    else:
        findings_path.unlink()
    return 1 if findings or raw_5xx else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--http-requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
