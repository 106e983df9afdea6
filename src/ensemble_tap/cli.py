"""Command line: ``ensemble-tap serve | check-config | tail``."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ensemble_tap import __version__, admin_cli
from ensemble_tap.config import ConfigError, LoadedConfig, load_config

cli = typer.Typer(
    help="Ensemble Tap: verified SaaS webhooks as CloudEvents on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.add_typer(admin_cli.app, name="admin")

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (default: ./config.yaml if present, else built-in defaults).",
        show_default=False,
    ),
]


def _run(coro: Coroutine[Any, Any, None]) -> None:
    from ensemble_tap.serving import run

    run(coro)


def _load(path: str | None) -> LoadedConfig:
    from ensemble_tap.providers import REGISTRY

    try:
        return load_config(path, providers=REGISTRY)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


RoleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--role",
        help="Run only this role; repeat for several: ingress, poller, sink, admin "
        "(default: all). Processes with different roles meet in one NATS (set nats.url).",
        show_default=False,
    ),
]


@cli.command()
def serve(config: ConfigOption = None, role: RoleOption = None) -> None:
    """Run the service until SIGINT or SIGTERM."""
    from ensemble_tap.app import ALL_ROLES, check_roles
    from ensemble_tap.app import serve as run_service
    from ensemble_tap.observability import configure_logging, get_logger

    roles = frozenset(role) if role else ALL_ROLES
    try:
        check_roles(roles)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from None
    loaded = _load(config)
    configure_logging(loaded.config.log_level)
    log = get_logger("ensemble_tap.cli")
    log.info("config loaded", source=loaded.source)
    for warning in loaded.warnings:
        log.warning("config warning", detail=warning)
    try:
        _run(run_service(loaded.config, roles))
    except Exception as exc:
        log.error("tap runtime failed", error=str(exc) or type(exc).__name__)
        raise typer.Exit(1) from None


@cli.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Load and validate the config, then exit (0 when valid)."""
    loaded = _load(config)
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"config check passed ({loaded.source})")


@cli.command()
def tail(
    config: ConfigOption = None,
    subject: Annotated[
        str | None, typer.Option(help="Subject filter (default: every event subject).")
    ] = None,
    all_events: Annotated[
        bool, typer.Option("--all", help="Start at the oldest stored event, not the next one.")
    ] = False,
    count: Annotated[int, typer.Option(help="Stop after this many events (0: run until ^C).")] = 0,
    dlq: Annotated[
        bool, typer.Option("--dlq", help="Read the dead-letter stream instead of events.")
    ] = False,
) -> None:
    """Print the CloudEvents arriving on the stream, one JSON object per line."""
    _quiet_on_closed_pipe()
    loaded = _load(config)
    try:
        _run(_tail(loaded, subject, all_events, count, dlq))
    except ConnectionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


async def _tail(
    loaded: LoadedConfig, subject: str | None, all_events: bool, count: int, dlq: bool
) -> None:
    import nats
    from nats.aio.msg import Msg
    from nats.js.api import DeliverPolicy

    from ensemble_tap.bus.embedded import url_file
    from ensemble_tap.bus.streams import DLQ_SUBJECTS, dlq_stream_name

    cfg = loaded.config
    url = cfg.nats.url
    if url is None:
        marker = url_file(cfg.data_dir)
        if not marker.exists():
            raise ConnectionError(
                f"no nats.url configured and no embedded server running ({marker} missing); "
                "start `ensemble-tap serve` first"
            )
        url = marker.read_text().strip()
    from ensemble_tap.bus.connection import Broker
    from ensemble_tap.observability import Metrics

    options = Broker(cfg.nats, url.split(","), Metrics())._options()
    for callback in ("disconnected_cb", "reconnected_cb", "closed_cb", "error_cb"):
        options.pop(callback)
    try:
        nc = await nats.connect(**{**options, "max_reconnect_attempts": 3})
    except Exception as exc:
        raise ConnectionError(f"cannot connect to {url}: {exc}") from None
    seen = 0
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        nonlocal seen
        try:
            line = orjson.dumps(orjson.loads(msg.data)).decode()
        except orjson.JSONDecodeError:
            line = msg.data.decode("utf-8", errors="replace")
        typer.echo(f"{msg.subject} {line}")
        seen += 1
        if count and seen >= count:
            done.set()

    policy = DeliverPolicy.ALL if all_events else DeliverPolicy.NEW
    stream = dlq_stream_name(cfg.nats) if dlq else cfg.nats.stream
    js = nc.jetstream()
    await js.subscribe(
        subject or (DLQ_SUBJECTS if dlq else f"{cfg.nats.subject_prefix}.>"),
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=policy,
        stream=stream,
    )
    typer.echo(f"listening on {url} stream {stream} (Ctrl-C to stop)", err=True)
    try:
        await done.wait()
    finally:
        await nc.close()


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@cli.command()
def query(
    sql: Annotated[
        str, typer.Argument(help="SQL to run, e.g. SELECT count() FROM ensemble.tap_events")
    ],
    data_dir: Annotated[
        str,
        typer.Option(
            "--data-dir", help="The service's data_dir (its ClickHouse data is in DIR/clickhouse)."
        ),
    ] = "./data",
    json_rows: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per row instead of a table.")
    ] = False,
) -> None:
    """Run read-only SQL on the embedded ClickHouse data (while the service is stopped)."""
    _quiet_on_closed_pipe()
    from ensemble_tap.sink.backends import BackendError, read_only_query

    try:
        output = read_only_query(
            data_dir, sql, "JSONEachRow" if json_rows else "PrettyCompactMonoBlock"
        )
    except BackendError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    sys.stdout.buffer.write(output)
    sys.stdout.buffer.flush()


def _quiet_on_closed_pipe() -> None:
    """For printing commands only (``| head``): a closed pipe ends them without a traceback.
    Never for ``serve``: a client closing its connection must not kill the service."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def main() -> None:
    cli(prog_name=Path(sys.argv[0]).name if sys.argv else "ensemble-tap")


__all__ = ["cli", "main"]
