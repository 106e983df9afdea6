"""A thin ClickHouse HTTP interface over chdb, for testing the clickhouse-connect path.

No modern ClickHouse server can be installed here, so the driver talks to this adapter: it
accepts the requests of ClickHouse's HTTP interface (query in the URL or the body, insert
data in the body, ``param_*`` query parameters, Basic or X-ClickHouse-User/Key
authentication, optional TLS with client certificates), runs the SQL on chdb — the real
engine — and answers the way the server does (body in the requested format,
``X-ClickHouse-*`` headers, ``Code: N. DB::Exception`` errors).

``stop()`` closes the listening socket (connection refused, as when a server is down) and
``start()`` listens again on the same port.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import orjson

from ensemble_tap.bus.embedded import free_port

_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# URL parameters of the HTTP interface that are not query settings.
_TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "wait_end_of_query",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "client_protocol_version",
        "user",
        "password",
    }
)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that stopping drops them, as a crashed server would."""

    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@dataclass
class Request:
    """What the adapter received, for assertions about what the driver sent."""

    method: str
    query: str
    params: dict[str, str]
    headers: dict[str, str]
    body_size: int


@dataclass
class ClickHouseHttp:
    data_path: Path
    username: str = "default"
    password: str = ""
    tls: ssl.SSLContext | None = None
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    _conn: Any = None
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ClickHouseHttp:
        if self._conn is None:
            self._conn = chdb.connect(str(self.data_path))  # type: ignore[no-untyped-call]
        server = _Server(("127.0.0.1", self.port), _handler(self))
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None

    def close(self) -> None:
        self.stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def sql(self, query: str, fmt: str = "JSONEachRow") -> list[dict[str, Any]]:
        """Run ``query`` on the adapter's engine directly (for assertions)."""
        with self._lock:
            body = bytes(self._conn.query(query, fmt).bytes())
        return [orjson.loads(line) for line in body.splitlines() if line.strip()]

    def execute(self, query: str, params: dict[str, str], data: bytes) -> tuple[bytes, str]:
        match = _FORMAT_CLAUSE.search(query) if not data else None
        fmt = params.get("default_format") or "TabSeparated"
        if match is not None:
            fmt = match.group(1)
        text = query if not data else query + "\n" + data.decode()
        bound = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in params.items()
            if not k.startswith("param_") and k not in _TRANSPORT_PARAMS and _SETTING_NAME.match(k)
        }
        with self._lock:
            for name, value in settings.items():  # URL settings apply to this request
                quoted = value.replace("\\", "\\\\").replace("'", "\\'")
                self._conn.query(f"SET {name} = '{quoted}'")
            result = self._conn.query(text, fmt, params=bound)
        return (bytes(result.bytes()) if result is not None else b""), fmt


def _handler(adapter: ClickHouseHttp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if url.path == "/ping":
                self._reply(200, b"Ok.\n", {})
                return
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            if not self._authenticated(params):
                self._error(516, "AUTHENTICATION_FAILED: default: Authentication failed", 401)
                return
            if "query" in params:
                query, data = params["query"], body
            else:
                query, data = body.decode(), b""
            adapter.requests.append(
                Request(self.command, query, params, dict(self.headers.items()), len(body))
            )
            try:
                result, fmt = adapter.execute(query, params, data)
            except Exception as exc:
                message = str(exc).strip()
                code = _ERROR_CODE.search(message)
                self._error(int(code.group(1)) if code else 1000, message, 500)
                return
            summary = {"read_rows": "0", "written_rows": "0", "result_rows": "0"}
            self._reply(
                200,
                result,
                {
                    "X-ClickHouse-Format": fmt,
                    "X-ClickHouse-Summary": orjson.dumps(summary).decode(),
                    "Content-Type": "text/plain; charset=UTF-8",
                },
            )

        def _authenticated(self, params: dict[str, str]) -> bool:
            user = self.headers.get("X-ClickHouse-User")
            key = self.headers.get("X-ClickHouse-Key")
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            elif self.headers.get("X-ClickHouse-SSL-Certificate-Auth") == "on":
                return user == adapter.username and _has_peer_certificate(self)
            user = user or params.get("user") or "default"
            key = key or params.get("password") or ""
            return user == adapter.username and key == adapter.password

        def _error(self, code: int, message: str, status: int) -> None:
            text = (
                message
                if message.startswith("Code:")
                else f"Code: {code}. DB::Exception: {message}"
            )
            self._reply(status, text.encode() + b"\n", {"X-ClickHouse-Exception-Code": str(code)})

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("X-ClickHouse-Query-Id", str(uuid.uuid4()))
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Server-Display-Name", "chdb-adapter")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _has_peer_certificate(handler: BaseHTTPRequestHandler) -> bool:
    connection = handler.connection
    return isinstance(connection, ssl.SSLSocket) and connection.getpeercert() is not None


def server_tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


__all__ = ["ClickHouseHttp", "Request", "server_tls_context"]
