"""Command line: ``ensemble-tap serve | check-config | tail | query | send | state migrate |
version`` and ``ensemble-tap admin …`` (admin_cli.py: the admin API from a shell); ``main``
also takes the Go reference's ``-config FILE [-check-config]`` flags (``reference_command``)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from ensemble_tap import __version__, admin_cli
from ensemble_tap.config import ConfigError, LoadedConfig, load_config

if TYPE_CHECKING:
    from ensemble_tap.bus.client import TapClient
    from ensemble_tap.config.models import Config

cli = typer.Typer(
    help="Ensemble Tap: verified SaaS webhooks as CloudEvents on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.add_typer(admin_cli.app, name="admin")
state_cli = typer.Typer(
    help="Poll state: checkpoints, record snapshots, rotated OAuth refresh tokens.",
    no_args_is_help=True,
)
cli.add_typer(state_cli, name="state")

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
    from ensemble_tap.secret_reload import ConfigSource

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
        _run(run_service(loaded.config, roles, source=ConfigSource(config)))
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


async def _connect_nats(cfg: Config) -> tuple[TapClient, str]:
    """A client of the configured NATS, or of the embedded server ``serve`` runs, and its
    URL; raises ConnectionError saying why not."""
    from ensemble_tap.bus.client import TapClient
    from ensemble_tap.bus.connection import connect_options
    from ensemble_tap.bus.embedded import url_file

    url = cfg.nats.url
    if url is None:
        marker = url_file(cfg.data_dir)
        if not marker.exists():
            raise ConnectionError(
                f"no nats.url configured and no embedded server running ({marker} missing); "
                "start `ensemble-tap serve` first"
            )
        url = marker.read_text().strip()
    options = connect_options(cfg.nats, url.split(","))
    nc = TapClient()  # its WebSocket transport for ws:// servers (bus/websocket.py)
    try:
        await nc.connect(**{**options, "max_reconnect_attempts": 3})
    except Exception as exc:
        raise ConnectionError(f"cannot connect to {url}: {exc}") from None
    return nc, url


async def _tail(
    loaded: LoadedConfig, subject: str | None, all_events: bool, count: int, dlq: bool
) -> None:
    from nats.aio.msg import Msg
    from nats.js.api import DeliverPolicy

    from ensemble_tap.bus.streams import DLQ_SUBJECTS, dlq_stream_name

    cfg = loaded.config
    nc, url = await _connect_nats(cfg)
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


# --------------------------------------------------------------------------- send


@cli.command("send")
def send_command(  # nosec B107
    provider: Annotated[
        str,
        typer.Argument(
            help="Provider name as configured: stripe, github, hubspot, linear, shopify, or "
            "any other name (generic HMAC, e.g. acme).",
            metavar="PROVIDER",
            show_default=False,
        ),
    ],
    url: Annotated[
        str,
        typer.Option(
            "--url",
            help="The service's base URL, e.g. http://localhost:8080; the command adds "
            "BASE_PATH/PROVIDER (or BASE_PATH/PROVIDER/TENANT).",
            show_default=False,
        ),
    ],
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            envvar="TAP_SEND_SECRET",
            show_envvar=True,
            show_default=False,
            help="The provider's signing secret (HubSpot: the app's client secret). Prefer "
            "TAP_SEND_SECRET: a --secret value lands in your shell history and the process list.",
        ),
    ] = "",
    tenant: Annotated[
        str, typer.Option("--tenant", help="Tenant key: posts to PROVIDER/TENANT.")
    ] = "",
    event_type: Annotated[
        str | None,
        typer.Option(
            "--event-type",
            help="Event type: Stripe `type`, GitHub X-GitHub-Event, HubSpot "
            "`subscriptionType`, Linear TYPE or TYPE.ACTION, Shopify topic, generic "
            "X-Event-Type (default: the sample's).",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="JSON body to send instead of the provider's sample.",
            show_default=False,
        ),
    ] = None,
    expect: Annotated[
        int, typer.Option("--expect", help="Expected HTTP status; any other exits 1.")
    ] = 202,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Then confirm the event arrived and print it: from the stream with --nats, "
            "else through GET /admin/events (needs the ClickHouse sink and the admin token).",
        ),
    ] = False,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats", help="NATS URL for --wait, e.g. nats://127.0.0.1:4222.", show_default=False
        ),
    ] = None,
    admin_url: Annotated[
        str | None,
        typer.Option(
            "--admin-url",
            help="Base URL of the process serving /admin, for --wait (default: --url).",
            show_default=False,
        ),
    ] = None,
    admin_token: Annotated[
        str,
        typer.Option(
            "--admin-token",
            envvar="TAP_ADMIN_TOKEN",
            show_envvar=True,
            show_default=False,
            help="Admin token for --wait through /admin/events (prefer TAP_ADMIN_TOKEN).",
        ),
    ] = "",
    wait_timeout: Annotated[
        float, typer.Option("--wait-timeout", min=0.1, help="Seconds --wait waits.")
    ] = 10.0,
    base_path: Annotated[
        str, typer.Option("--base-path", help="The service's server.base_path.")
    ] = "/webhooks",
) -> None:
    """Send a test delivery signed exactly as PROVIDER signs; print the answer (and, with
    --wait, the event). Exits 1 when the status is not --expect."""
    from ensemble_tap.send import SendError, SendOptions, send

    options = SendOptions(
        provider=provider,
        url=url,
        secret=secret,
        tenant=tenant,
        base_path=base_path,
        event_type=event_type,
        file=file,
        expect=expect,
        wait=wait,
        nats_url=nats_url,
        admin_url=admin_url,
        admin_token=admin_token,
        wait_timeout=wait_timeout,
    )
    try:
        send(options, typer.echo)
    except SendError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@state_cli.command("migrate")
def state_migrate(
    source: Annotated[str, typer.Option("--from", help="Where the state is: sqlite.")],
    target: Annotated[str, typer.Option("--to", help="Where it goes: nats.")],
    config: ConfigOption = None,
) -> None:
    """Copy the SQLite state (state.sqlite_path, default <data_dir>/tap-state.db) into the
    NATS buckets of state.backend nats. Keys already in NATS are left as they are, so a
    second run copies nothing. Run it before the replicas start."""
    if (source, target) != ("sqlite", "nats"):
        raise typer.BadParameter("only --from sqlite --to nats is supported", param_hint="--from")
    from ensemble_tap.state import StateError, default_sqlite_path

    loaded = _load(config)
    cfg = loaded.config
    path = Path(default_sqlite_path(cfg.state, cfg.data_dir))
    if not path.is_file():
        typer.echo(f"error: no SQLite state at {path} (state.sqlite_path): nothing to migrate",
                   err=True)  # fmt: skip
        raise typer.Exit(1)
    try:
        _run(_migrate_state(cfg, path))
    except (ConnectionError, StateError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


async def _migrate_state(cfg: Config, path: Path) -> None:
    from nats.errors import Error as NatsError

    from ensemble_tap.state import NatsStateStore, SqliteStateStore, StateError
    from ensemble_tap.state.migrate import sqlite_to_nats

    nc, _ = await _connect_nats(cfg)
    source = SqliteStateStore(str(path))
    try:
        try:
            target = await NatsStateStore.open(
                nc.jetstream(),
                replicas=cfg.nats.stream_replicas,
                inline_limit=nc.max_payload // 2,
            )
        except (NatsError, TimeoutError) as exc:
            raise StateError(f"create the state buckets: {exc or type(exc).__name__}") from None
        report = await sqlite_to_nats(source, target)
    finally:
        await source.close()
        await nc.close()
    typer.echo(f"migrated {path} to nats")
    for line in report.lines():
        typer.echo(line)


def _quiet_on_closed_pipe() -> None:
    """For printing commands only (``| head``): a closed pipe ends them without a traceback.
    Never for ``serve``: a client closing its connection must not kill the service."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


# The reference's command line (Go flags), kept so container args and probes written for it
# work: ``-config FILE`` runs the service, ``-check-config`` only checks (docs/migrating.md).
REFERENCE_USAGE = """Usage of {prog} (the reference's flags; `{prog} --help` lists the subcommands):
  -check-config
        load and validate the config, then exit
  -config string
        path of the YAML config file (default: ./config.yaml if present, else built-in defaults)
"""
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "true", "TRUE", "True"), True),
    **dict.fromkeys(("0", "f", "F", "false", "FALSE", "False"), False),
}


class ReferenceFlagError(ValueError):
    pass


def reference_command(args: list[str]) -> list[str] | None:
    """``-config FILE [-check-config]`` (Go flag syntax: one or two dashes, ``-flag value`` or
    ``-flag=value``) as the equivalent subcommand line; None when ``args`` does not start with
    one of the reference's flags (subcommands are the primary interface)."""
    if not args or _flag_name(args[0]) not in ("config", "check-config"):
        return None
    config: str | None = None
    check = False
    index = 0
    while index < len(args):
        arg = args[index]
        name, has_value, value = _flag_name(arg), "=" in arg, arg.partition("=")[2]
        if name == "config":
            if not has_value:
                index += 1
                if index == len(args):
                    raise ReferenceFlagError("flag needs an argument: -config")
                value = args[index]
            config = value
        elif name == "check-config":
            if has_value and value not in _GO_BOOLS:
                raise ReferenceFlagError(f'invalid boolean value "{value}" for -check-config')
            check = _GO_BOOLS[value] if has_value else True
        elif name:
            raise ReferenceFlagError(f"flag provided but not defined: -{name}")
        else:
            raise ReferenceFlagError(f"unexpected argument after the flags: {arg}")
        index += 1
    command = ["check-config" if check else "serve"]
    return command + (["--config", config] if config is not None else [])


def _flag_name(arg: str) -> str:
    """``-name``, ``--name`` or either with ``=value`` → ``name``; "" for anything else."""
    for dashes in ("--", "-"):
        if arg.startswith(dashes) and arg[len(dashes) : len(dashes) + 1] not in ("", "-", "="):
            return arg[len(dashes) :].partition("=")[0]
    return ""


def main() -> None:
    prog = Path(sys.argv[0]).name if sys.argv else "ensemble-tap"
    args = sys.argv[1:]
    try:
        translated = reference_command(args)
    except ReferenceFlagError as exc:
        sys.stderr.write(f"{exc}\n{REFERENCE_USAGE.format(prog=prog)}")
        sys.exit(2)
    cli(args=translated if translated is not None else args, prog_name=prog)


__all__ = ["cli", "main"]
