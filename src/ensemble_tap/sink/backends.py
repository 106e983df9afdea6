"""Where the sink's SQL runs: the embedded engine (chdb) or a ClickHouse server over HTTP.

Both take the same SQL text. Queries return JSONEachRow rows as dicts; inserts take a
complete ``INSERT … FORMAT <fmt>`` statement and the rows already encoded in that format.
Both client libraries block, so every call runs in a worker thread: chdb in one dedicated
thread (one statement at a time), clickhouse-connect in a pool of ``max_open_conns`` threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from ensemble_tap.config.clickhouse_addr import clickhouse_endpoints
from ensemble_tap.config.models import ClickHouseConfig

T = TypeVar("T")
EMBEDDED_DIR = "clickhouse"
SERVER_DATABASE = "default"  # so CREATE DATABASE works before our database exists
_MUST_ESCAPE = frozenset("\\'`\t\n")


class BackendError(RuntimeError):
    """A ClickHouse call failed; ``unreachable`` when ClickHouse could not be reached at all
    (as opposed to a statement it rejected)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class Backend(Protocol):
    @property
    def description(self) -> str: ...

    async def execute(self, sql: str, params: Mapping[str, str] | None = None) -> None: ...

    async def query(
        self, sql: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]: ...

    async def insert(self, statement: str, data: bytes) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def parse_json_rows(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def escape_param(value: str) -> str:
    """A query parameter in ClickHouse's escaped text form, as the HTTP interface (and so
    clickhouse-connect) sends it: otherwise ``\\`` in a value would start an escape."""
    return "".join("\\" + char if char in _MUST_ESCAPE else char for char in value)


def embedded_path(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve() / EMBEDDED_DIR


class EmbeddedBackend:
    """chdb with its data under ``<data_dir>/clickhouse``.

    chdb allows one data path per process and one writer process per path; another process
    (e.g. ``ensemble-tap query``) cannot open it while the service runs.
    """

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")
        self._conn: Any = None

    @property
    def description(self) -> str:
        return f"embedded chdb at {self.path}"

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if not self.readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise BackendError(f"no embedded ClickHouse data at {self.path}")
        import chdb  # imported on use: the engine is large and only the sink needs it

        target = f"{self.path}?mode=ro" if self.readonly else str(self.path)
        try:
            self._conn = chdb.connect(target)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise BackendError(
                f"cannot open the embedded ClickHouse data at {self.path}: {_first_line(exc)} "
                "(another process may be using it)",
                unreachable=True,
            ) from exc

    async def execute(self, sql: str, params: Mapping[str, str] | None = None) -> None:
        await self._run(self._query, sql, "TabSeparated", params)

    async def query(
        self, sql: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        return parse_json_rows(await self._run(self._query, sql, "JSONEachRow", params))

    async def insert(self, statement: str, data: bytes) -> None:
        await self._run(self._insert, statement, data)

    async def ping(self) -> None:
        await self._run(self._query, "SELECT 1", "TabSeparated", None)

    @classmethod
    def query_read_only(cls, path: Path, sql: str, fmt: str) -> bytes:
        """Open the data at ``path`` read-only, run ``sql`` in the calling thread and close:
        one query from another process (``ensemble-tap query``). A FORMAT clause in ``sql``
        wins over ``fmt``."""
        backend = cls(path, readonly=True)
        try:
            backend._open()
            return backend._query(sql, fmt, None)
        finally:
            if backend._conn is not None:
                backend._close()
            backend._executor.shutdown(wait=False)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        conn.close()

    def _insert(self, statement: str, data: bytes) -> None:
        """chdb's streaming insert takes the statement without its FORMAT clause and the
        rows as bytes (twice as fast as the rows inline in the query text)."""
        if self._conn is None:
            raise BackendError("embedded ClickHouse is not open", unreachable=True)
        head, found, fmt = statement.rpartition(" FORMAT ")
        if not found:
            raise BackendError("an insert statement must end with FORMAT <format>")
        try:
            inserter = self._conn.send_insert(head, fmt.strip())
            try:
                inserter.append(data)
                inserter.finish()
            except BaseException:
                inserter.cancel()
                raise
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(_first_line(exc)) from exc

    def _query(self, sql: str, fmt: str, params: Mapping[str, str] | None) -> bytes:
        if self._conn is None:
            raise BackendError("embedded ClickHouse is not open", unreachable=True)
        try:
            escaped = {key: escape_param(value) for key, value in (params or {}).items()}
            result = self._conn.query(sql, fmt, params=escaped)
        except Exception as exc:
            raise BackendError(_first_line(exc)) from exc
        return bytes(result.bytes()) if result is not None else b""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


class ServerBackend:
    """A ClickHouse server (or cluster entry points) over its HTTP interface.

    ``addr`` entries are tried in order and the first one that answers is used until it
    fails (failover, not load balancing). Connections are replaced after
    ``conn_max_lifetime``; at most ``max_open_conns`` are open at once.
    """

    def __init__(self, config: ClickHouseConfig, endpoints: list[tuple[str, int]]) -> None:
        self.config = config
        self.endpoints = endpoints
        self._executor = ThreadPoolExecutor(
            max_workers=config.max_open_conns, thread_name_prefix="clickhouse"
        )
        self._client: Any = None
        self._created = 0.0
        self._index = 0
        self._lock = threading.Lock()  # worker threads share one client
        # clickhouse-connect logs transport failures with tracebacks; the sink logs them once.
        logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)

    @property
    def description(self) -> str:
        host, port = self.endpoints[self._index]
        scheme = "https" if self.config.secure else "http"
        return f"clickhouse {scheme}://{_host_text(host)}:{port}"

    async def open(self) -> None:
        await self._run(lambda client: client)

    async def execute(self, sql: str, params: Mapping[str, str] | None = None) -> None:
        await self._run(lambda client: client.command(sql, parameters=dict(params or {})))

    async def query(
        self, sql: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        body = await self._run(
            lambda client: client.raw_query(sql, parameters=dict(params or {}), fmt="JSONEachRow")
        )
        return parse_json_rows(bytes(body))

    async def insert(self, statement: str, data: bytes) -> None:
        # The statement (with its SETTINGS and FORMAT) goes in the URL, the rows in the body.
        await self._run(lambda client: client.command(statement, data=data))

    async def ping(self) -> None:
        await self._run(lambda client: client.command("SELECT 1"))

    async def close(self) -> None:
        def drop() -> None:
            with self._lock:
                self._drop()

        await asyncio.get_running_loop().run_in_executor(self._executor, drop)
        self._executor.shutdown(wait=True)

    async def _run(self, call: Callable[[Any], T]) -> T:
        def run() -> T:
            client = self._connected()
            try:
                return call(client)
            except Exception as exc:
                raise self._failure(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    def _connected(self) -> Any:
        """The current client, (re)created when missing or older than conn_max_lifetime."""
        with self._lock:
            return self._connected_locked()

    def _connected_locked(self) -> Any:
        lifetime = self.config.conn_max_lifetime
        fresh = not lifetime or time.monotonic() - self._created < lifetime
        if self._client is not None and fresh:
            return self._client
        self._drop()
        errors = []
        for step in range(len(self.endpoints)):
            index = (self._index + step) % len(self.endpoints)
            try:
                client = self._new_client(*self.endpoints[index])
            except Exception as exc:
                errors.append(f"{_host_text(self.endpoints[index][0])}: {_first_line(exc)}")
                continue
            self._client, self._created, self._index = client, time.monotonic(), index
            return client
        raise BackendError("clickhouse unreachable: " + "; ".join(errors), unreachable=True)

    def _failure(self, exc: Exception) -> BackendError:
        from clickhouse_connect.driver.exceptions import OperationalError

        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, OperationalError):
            # Transport failure: forget this connection; the next call tries the next entry.
            with self._lock:
                self._drop()
                self._index = (self._index + 1) % len(self.endpoints)
            return BackendError(f"clickhouse unreachable: {_first_line(exc)}", unreachable=True)
        return BackendError(_first_line(exc))

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a broken client must not hide the error
                client.close()

    def _new_client(self, host: str, port: int) -> Any:
        import clickhouse_connect
        from clickhouse_connect.driver import httputil

        cfg = self.config
        pool_options: dict[str, Any] = {"maxsize": cfg.max_open_conns, "block": True}
        tls: dict[str, Any] = {}
        if cfg.secure:
            pool_options["verify"] = not cfg.insecure_skip_verify
            tls["verify"] = not cfg.insecure_skip_verify
            if cfg.ca_file:
                pool_options["ca_cert"] = tls["ca_cert"] = cfg.ca_file
            if cfg.cert_file:
                pool_options["client_cert"] = tls["client_cert"] = cfg.cert_file
                pool_options["client_cert_key"] = tls["client_cert_key"] = cfg.key_file
                # With a password the certificate only secures the transport and the user
                # logs in with the password; without one, ClickHouse authenticates the
                # certificate itself (its "ssl_certificates" users).
                tls["tls_mode"] = "strict" if cfg.password else "mutual"
            if cfg.tls_server_name:
                tls["server_host_name"] = cfg.tls_server_name
                pool_options["server_hostname"] = cfg.tls_server_name
                if not cfg.insecure_skip_verify:
                    pool_options["assert_hostname"] = cfg.tls_server_name
        return clickhouse_connect.get_client(
            host=host,
            port=port,
            interface="https" if cfg.secure else "http",
            username=cfg.username,
            password=cfg.password,
            database=SERVER_DATABASE,
            connect_timeout=max(1, round(cfg.dial_timeout)),
            send_receive_timeout=max(1, round(cfg.insert_timeout)),
            query_retries=0,
            autogenerate_session_id=False,
            compress=False,
            pool_mgr=httputil.get_pool_manager(**pool_options),
            **tls,
        )


def open_backend_for(
    config: ClickHouseConfig, data_dir: str | Path
) -> EmbeddedBackend | ServerBackend:
    """The backend the config selects (not opened yet)."""
    if config.mode == "embedded":
        return EmbeddedBackend(embedded_path(data_dir))
    return ServerBackend(config, clickhouse_endpoints(config.addr, config.secure))


def read_only_query(data_dir: str | Path, sql: str, fmt: str) -> bytes:
    """Run ``sql`` on the embedded data read-only (``ensemble-tap query``); a FORMAT clause
    in ``sql`` wins over ``fmt``."""
    return EmbeddedBackend.query_read_only(embedded_path(data_dir), sql, fmt)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
