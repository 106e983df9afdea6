"""Command line for the admin API of a running server: ``ensemble-tap admin …``.

``dlq`` lists dead-letter records, ``replay`` creates a replay job and follows it to the end,
``jobs`` lists, shows, follows and cancels replay jobs, ``pollers`` shows poller status. Every
command talks HTTP to ``--url`` (env ``TAP_ADMIN_URL``) with the token of ``TAP_ADMIN_TOKEN``;
tables are plain aligned text and ``--json`` prints the API's own JSON instead. Errors are one
line on stderr naming the HTTP status and the request id of the API's error envelope, so the
matching audit log line on the server is one grep away.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol

import orjson
import typer

from ensemble_tap import __version__

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://localhost:8080"
URL_ENV = "TAP_ADMIN_URL"
TOKEN_ENV = "TAP_ADMIN_TOKEN"  # nosec B105
HTTP_TIMEOUT = 10.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# Longest wait honoured from a Retry-After while following a job.
MAX_RETRY_AFTER = 10.0
_FRACTION = re.compile(r"\.\d+Z$")

app = typer.Typer(
    help=(
        "Inspect dead letters and replay them through the admin API of a running server.\n\n"
        f"The server is --url (env {URL_ENV}, default {DEFAULT_URL}); the admin token comes "
        f"from the environment variable {TOKEN_ENV}."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(
    short_help="List replay jobs, or show, follow or cancel one.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)
app.add_typer(jobs_app, name="jobs")
dlq_app = typer.Typer(
    short_help="List dead-letter records, or show one.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq_app, name="dlq")
pollers_app = typer.Typer(
    short_help="Show poller status, or run, pause, resume or reset one target.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pollers_app, name="pollers")
events_app = typer.Typer(
    short_help="Search stored events, or follow new ones as they are published.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)
app.add_typer(events_app, name="events")

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar=URL_ENV,
        show_envvar=True,
        help="Base URL of the running ensemble-tap server.",
    ),
]
TokenOption = Annotated[
    str,
    typer.Option(
        "--token",
        envvar=TOKEN_ENV,
        show_envvar=True,
        show_default=False,
        help=(
            f"Admin token. Prefer the {TOKEN_ENV} environment variable: a --token value lands "
            "in your shell history and is visible to other users in the process list."
        ),
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON instead of a table.")
]
CursorOption = Annotated[
    str | None, typer.Option(help="Continue after a previous page (its next cursor).")
]
AllPagesOption = Annotated[
    bool, typer.Option("--all-pages", help="Fetch every page, not only the first.")
]
IntervalOption = Annotated[
    float,
    typer.Option("--poll-interval", min=0.05, help="Seconds between job status checks."),
]


class AdminClient:
    """A thin httpx client: every failure becomes a one-line message and exit status 1."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.url = _normalise_url(url)
        if not token.strip():
            _fail(f"no admin token: export {TOKEN_ENV}=<token> (or pass --token)")
        if not token.strip().isascii():
            _fail(f"the admin token in {TOKEN_ENV} must be ASCII text")
        try:
            self._http = httpx.Client(
                base_url=self.url,
                headers={
                    "X-Admin-Token": token.strip(),
                    "User-Agent": f"ensemble-tap-cli/{__version__}",
                    "Accept": "application/json",
                },
                timeout=HTTP_TIMEOUT,
            )
        except httpx.InvalidURL as exc:
            _fail(f"invalid --url {_short(self.url)}: {_short(exc)}")

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        wait_when_limited: bool = False,
    ) -> dict[str, Any]:
        """The JSON body of a 2xx answer; anything else ends the command with a message.

        With ``wait_when_limited`` a 429 is waited out (its ``Retry-After``) instead."""
        import httpx

        while True:
            try:
                response = self._http.request(
                    method, path, params=dict(params or {}), headers=dict(headers or {})
                )
            except httpx.ConnectError as exc:
                _fail(
                    f"cannot connect to {self.url} ({_short(exc)}): is `ensemble-tap serve` "
                    f"running there? Point --url or {URL_ENV} at it"
                )
            except httpx.TimeoutException:
                _fail(f"{self.url} did not answer within {HTTP_TIMEOUT:g}s ({method} {path})")
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                _fail(f"cannot talk to {self.url}: {_short(exc)}")
            if response.status_code == 429 and wait_when_limited:
                time.sleep(_retry_after(response))
                continue
            if response.status_code >= 400:
                _fail(_describe_error(response, self.url))
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                _fail(f"{method} {path}: HTTP {response.status_code} with a body that is not JSON")
            if not isinstance(body, dict):
                _fail(f"{method} {path}: unexpected answer {_short(response.text)}")
            return body

    def follow(self, path: str, params: Mapping[str, str]) -> Iterator[str]:
        """The ``data:`` payloads of a server-sent event stream, as they arrive (no time
        limit between events: the server sends a keep-alive comment every 15 s)."""
        import httpx

        timeout = httpx.Timeout(HTTP_TIMEOUT, read=None)
        accept = {"Accept": "text/event-stream"}
        try:
            with self._http.stream("GET", path, params=dict(params), headers=accept,
                                   timeout=timeout) as response:  # fmt: skip
                if response.status_code >= 400:
                    response.read()
                    _fail(_describe_error(response, self.url))
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        yield line.removeprefix("data:").strip()
        except httpx.ConnectError as exc:
            _fail(f"cannot connect to {self.url} ({_short(exc)})")
        except httpx.TransportError as exc:
            _fail(f"the event stream from {self.url} ended: {_short(exc)}")


# --------------------------------------------------------------------------- dlq


@dlq_app.callback(
    help=(
        "List dead-letter records, newest first, with a count per stage.\n\n"
        "REPLAYABLE says whether `ensemble-tap admin replay` can deliver a record again: "
        "publish and normalize records can; verify records (bad signatures) never are.\n\n"
        "Subcommand: `show ID` (one record with its request headers and body)."
    ),
)
def dlq(  # nosec B107
    ctx: typer.Context,
    stage: Annotated[
        str | None,
        typer.Option(help="Only records of this stage: verify, normalize, publish, poll_publish."),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only records of this provider.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only records of this tenant.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=500, help="Records per page (the server allows 500).")
    ] = 50,
    cursor: CursorOption = None,
    all_pages: AllPagesOption = False,
    include_payload: Annotated[
        bool,
        typer.Option("--include-payload", help="With --json: add each record's payload (base64)."),
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    if ctx.invoked_subcommand is not None:
        _refuse_list_options(ctx, _DLQ_LIST_ONLY)
        return
    params = _params(stage=stage, provider=provider, tenant=tenant, limit=limit)
    if include_payload:
        params["include_payload"] = "true"
    with AdminClient(url, token) as client:
        pages = list(_pages(client, "/admin/dlq", params, cursor, all_pages))
    records, last = _merged(pages, "records", as_json)
    if as_json:
        return
    if records:
        typer.echo(
            _table(
                (
                    "SEQ",
                    "OCCURRED_AT",
                    "STAGE",
                    "PROVIDER",
                    "TENANT",
                    "REPLAYABLE",
                    "REQUEST_ID",
                    "REASON",
                ),
                [
                    (
                        str(r.get("sequence", "")),
                        _time(r.get("occurred_at")),
                        r.get("stage", ""),
                        r.get("provider", ""),
                        r.get("tenant_id", ""),
                        "yes" if r.get("replayable") else "no",
                        r.get("request_id", ""),
                        r.get("reason", ""),
                    )
                    for r in records
                ],
                numeric={"SEQ"},
                widths={"REASON": 70, "REQUEST_ID": 40, "TENANT": 30},
            )
        )
    else:
        typer.echo("no dead-letter records match")
    summary = last.get("summary") or {}
    counts = ", ".join(f"{stage_} {count}" for stage_, count in sorted(summary.items()))
    scope = " (all tenants)" if tenant else ""
    typer.echo(f"in the DLQ by stage{scope}: {counts or 'none'}")
    _more_hint(last, "ensemble-tap admin dlq")


@dlq_app.command(
    "show",
    help=(
        "Show one dead-letter record: stage, provider, tenant, reason, time, the request's "
        "headers and the body where kept (credentials are never stored)."
    ),
)
def dlq_show(  # nosec B107
    ctx: typer.Context,
    record: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="The record's sequence (SEQ in the list) or its id (dlq_…).",
            show_default=False,
        ),
    ],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    url, token, as_json = _inherit(ctx, url=url, token=token, as_json=as_json)
    with AdminClient(url, token) as client:
        answer = client.call("GET", f"/admin/dlq/{_path_segment(record)}")
    if as_json:
        _print_json(answer)
        return
    letter: dict[str, Any] = answer.get("record", {})
    meta: dict[str, Any] = letter.get("request_meta") or {}
    _print_fields(
        [
            ("sequence", letter.get("sequence")),
            ("id", letter.get("id")),
            ("occurred_at", letter.get("occurred_at")),
            ("stage", letter.get("stage")),
            ("provider", letter.get("provider")),
            ("tenant_id", letter.get("tenant_id")),
            ("request_id", letter.get("request_id")),
            ("replayable", "yes" if letter.get("replayable") else "no"),
            ("reason", letter.get("reason")),
            ("original_subject", letter.get("original_subject")),
            ("payload_sha256", letter.get("payload_sha256")),
            ("request", " ".join(str(meta.get(k, "")) for k in ("method", "path")).strip()),
            ("remote_addr", meta.get("remote_addr")),
        ]
    )
    headers: dict[str, Any] = meta.get("headers") or {}
    if headers:
        typer.echo("\nheaders:")
        for name, value in sorted(headers.items()):
            typer.echo(f"  {_clean(name)}: {_clean(value)}")
    if "original_payload_text" in letter:
        typer.echo("\nbody:")
        typer.echo(_clean_block(str(letter["original_payload_text"])))
    elif letter.get("original_payload"):
        typer.echo("\nbody (base64, not UTF-8):")
        typer.echo(_clean(letter["original_payload"]))
    else:
        typer.echo("\nbody: not kept")


# --------------------------------------------------------------------------- replay


@app.command(
    "replay",
    help=(
        "Replay dead-letter records to the event stream as a job, and follow it to the end.\n\n"
        "Prints the job's progress, its replayed, skipped and failed counts, then the records "
        "that failed (they stay in the DLQ). Exit status 0 when the job succeeded, 1 when it "
        "failed or was cancelled. Ctrl-C stops following; the job goes on on the server.\n\n"
        "Replay dead letters only after the cause is fixed; try --dry-run first."
    ),
)
def replay(  # nosec B107
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only count what a real replay would deliver."),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Records to handle (default 100; the server caps it at admin_replay_max_limit).",
            show_default=False,
        ),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only records of this provider.")] = None,
    stage: Annotated[
        str | None, typer.Option(help="Only records of this stage (publish or normalize).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only records of this tenant.")] = None,
    sequence: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Only the record at this sequence (SEQ in `admin dlq`).",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why (X-Admin-Reason; at least 12 characters unless configured otherwise).",
            show_default=False,
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help=(
                "Idempotency-Key: sending the same key again returns the same job instead of "
                "starting another one (safe retries from scripts)."
            ),
            show_default=False,
        ),
    ] = None,
    no_follow: Annotated[
        bool,
        typer.Option("--no-follow", help="Print the new job and return; do not wait for it."),
    ] = False,
    poll_interval: IntervalOption = 0.5,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    params = _params(limit=limit, provider=provider, stage=stage, tenant=tenant, sequence=sequence)
    if dry_run:
        params["dry_run"] = "true"
    headers = {}
    if reason:
        headers["X-Admin-Reason"] = reason
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    with AdminClient(url, token) as client:
        created = client.call("POST", "/admin/replay-dlq", params, headers)
        job: dict[str, Any] = created.get("job", {})
        if no_follow:
            if as_json:
                _print_json(created)
            else:
                _announce(job, bool(created.get("idempotency_reused")))
            return
        if not as_json:
            _announce(job, bool(created.get("idempotency_reused")))
        _follow_to_end(client, created, poll_interval, as_json)


# --------------------------------------------------------------------------- jobs

_LIST_ONLY = ("status", "limit", "cursor", "all_pages")
_DLQ_LIST_ONLY = ("stage", "provider", "tenant", "limit", "cursor", "all_pages", "include_payload")


def _refuse_list_options(ctx: typer.Context, names: Sequence[str]) -> None:
    """Options of a list command given before one of its subcommands: a usage error."""
    misplaced = ["--" + name.replace("_", "-") for name in names if _on_command_line(ctx, name)]
    if misplaced:
        raise typer.BadParameter(
            f"{', '.join(misplaced)} filter the list; "
            f"`{ctx.info_name} {ctx.invoked_subcommand}` does not take them"
        )


@jobs_app.callback(
    help=(
        "List replay jobs, newest first, with a count per state.\n\n"
        "Subcommands: `show JOB_ID` (--follow waits for the job to end) and `cancel JOB_ID`."
    ),
)
def jobs(  # nosec B107
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only jobs in this state: queued, running, succeeded, failed, cancelled."
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=500, help="Jobs per page (the server allows 500).")
    ] = 50,
    cursor: CursorOption = None,
    all_pages: AllPagesOption = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    if ctx.invoked_subcommand is not None:
        _refuse_list_options(ctx, _LIST_ONLY)
        return
    params = _params(status=status, limit=limit)
    with AdminClient(url, token) as client:
        pages = list(_pages(client, "/admin/replay-dlq", params, cursor, all_pages))
    found, last = _merged(pages, "jobs", as_json)
    if as_json:
        return
    if found:
        typer.echo(
            _table(
                (
                    "JOB_ID",
                    "STATUS",
                    "MODE",
                    "FILTERS",
                    "REPLAYED",
                    "SKIPPED",
                    "FAILED",
                    "CREATED_AT",
                    "REASON",
                ),
                [
                    (
                        job.get("job_id", ""),
                        job.get("status", ""),
                        "dry run" if job.get("dry_run") else "replay",
                        _filters(job) or "-",
                        f"{job.get('would_replay', 0)} (would)"
                        if job.get("dry_run")
                        else str(job.get("replayed", 0)),
                        str(job.get("skipped", 0)),
                        str(job.get("failed", 0)),
                        _time(job.get("created_at")),
                        job.get("operator_reason", ""),
                    )
                    for job in found
                ],
                numeric={"REPLAYED", "SKIPPED", "FAILED"},
                widths={"REASON": 40},
            )
        )
    else:
        typer.echo("no replay jobs" + (f" with status {status}" if status else ""))
    summary = last.get("summary") or {}
    states = ("queued", "running", "succeeded", "failed", "cancelled")
    typer.echo("jobs by state: " + ", ".join(f"{s} {summary.get(s, 0)}" for s in states))
    _more_hint(last, "ensemble-tap admin jobs")


@jobs_app.command(
    "show",
    help=(
        "Show one replay job: its parameters, counts, times and failed records.\n\n"
        "With --follow, wait until it ends; the exit status is then 0 when it succeeded, 1 when "
        "it failed or was cancelled."
    ),
)
def jobs_show(  # nosec B107
    ctx: typer.Context,
    job_id: Annotated[
        str, typer.Argument(metavar="JOB_ID", help="The job's id (replay_…).", show_default=False)
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Wait for the job to end, printing progress.")
    ] = False,
    poll_interval: IntervalOption = 0.5,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    url, token, as_json = _inherit(ctx, url=url, token=token, as_json=as_json)
    with AdminClient(url, token) as client:
        answer = client.call("GET", f"/admin/replay-dlq/{_path_segment(job_id)}")
        if follow:
            _follow_to_end(client, answer, poll_interval, as_json)
    if as_json:
        _print_json(answer)
        return
    _print_job(answer.get("job", {}))


@jobs_app.command("cancel")
def jobs_cancel(  # nosec B107
    ctx: typer.Context,
    job_id: Annotated[
        str, typer.Argument(metavar="JOB_ID", help="The job's id (replay_…).", show_default=False)
    ],
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why (X-Admin-Reason; at least 12 characters unless configured otherwise).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """Cancel a queued replay job (one that is running or finished cannot be cancelled)."""
    url, token, as_json = _inherit(ctx, url=url, token=token, as_json=as_json)
    headers = {"X-Admin-Reason": reason} if reason else {}
    with AdminClient(url, token) as client:
        answer = client.call(
            "DELETE", f"/admin/replay-dlq/{_path_segment(job_id)}", headers=headers
        )
    if as_json:
        _print_json(answer)
        return
    job = answer.get("job", {})
    typer.echo(f"job {_clean(job.get('job_id', job_id))} {_clean(job.get('status', 'cancelled'))}")


# --------------------------------------------------------------------------- pollers


@pollers_app.callback(
    help=(
        "Show the runtime status of the server's pollers (last runs, failures, pauses).\n\n"
        "Subcommands: `run`, `pause`, `resume`, `reset` PROVIDER TENANT --reason … "
        "(TENANT `-` for a provider without tenants)."
    ),
)
def pollers(  # nosec B107
    ctx: typer.Context,
    provider: Annotated[str | None, typer.Option(help="Only pollers of this provider.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only pollers of this tenant.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    if ctx.invoked_subcommand is not None:
        _refuse_list_options(ctx, ("provider", "tenant"))
        return
    with AdminClient(url, token) as client:
        answer = client.call(
            "GET", "/admin/poller-status", _params(provider=provider, tenant=tenant)
        )
    if as_json:
        _print_json(answer)
        return
    found: list[dict[str, Any]] = answer.get("pollers", [])
    if not found:
        typer.echo("no pollers are running on this server")
        return
    typer.echo(
        _table(
            (
                "PROVIDER",
                "TENANT",
                "INTERVAL",
                "LAST_RUN",
                "LAST_SUCCESS",
                "FAILURES",
                "STATE",
                "LAST_ERROR",
            ),
            [
                (
                    p.get("provider", ""),
                    p.get("tenant_id", ""),
                    p.get("interval", ""),
                    _time(p.get("last_run_at")),
                    _time(p.get("last_success_at")),
                    f"{p.get('consecutive_failures', 0)}/{p.get('failure_budget', 0)}",
                    _poller_state(p),
                    p.get("last_error", ""),
                )
                for p in found
            ],
            numeric={"FAILURES"},
            widths={"LAST_ERROR": 60},
        )
    )


def _poller_state(entry: Mapping[str, Any]) -> str:
    if entry.get("paused"):
        return f"paused by {entry.get('paused_by', '?')}"
    if entry.get("cycle_running"):
        return "polling"
    return "open circuit" if entry.get("circuit") == "open" else "ok"


ProviderArgument = Annotated[
    str, typer.Argument(metavar="PROVIDER", help="The provider's name.", show_default=False)
]
TenantArgument = Annotated[
    str,
    typer.Argument(metavar="TENANT", help="The tenant id; - for none.", show_default=False),
]
ReasonOption = Annotated[
    str,
    typer.Option(
        help="Why (X-Admin-Reason, required; at least 12 characters unless configured "
        "otherwise). Audited.",
        show_default=False,
    ),
]
_POLLER_HELP = {
    "run": "Poll the target now: its next cycle starts at once (after one in flight).",
    "pause": "Pause the target: no further cycles until resumed (kept across restarts).",
    "resume": "Resume a paused target; it polls when its next cycle is due.",
    "reset": (
        "Forget the target's checkpoints: its next cycle reads again from the provider's "
        "initial lookback (records that did not change are not announced again)."
    ),
}


def _poller_command(action: str) -> None:
    def command(  # nosec B107
        ctx: typer.Context,
        provider: ProviderArgument,
        tenant: TenantArgument,
        reason: ReasonOption,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_URL,
        token: TokenOption = "",
    ) -> None:
        url, token, as_json = _inherit(ctx, url=url, token=token, as_json=as_json)
        path = f"/admin/pollers/{_path_segment(provider)}/{_path_segment(tenant)}/{action}"
        with AdminClient(url, token) as client:
            answer = client.call("POST", path, headers={"X-Admin-Reason": reason})
        if as_json:
            _print_json(answer)
            return
        entry: dict[str, Any] = answer.get("poller", {})
        result: dict[str, Any] = answer.get("result", {})
        name = f"{_clean(provider)}/{_clean(tenant)}"
        typer.echo(
            {
                "run": f"{name}: cycle scheduled now"
                + (" (after the one running)" if result.get("after_running_cycle") else ""),
                "pause": f"{name}: paused"
                + (" (the running cycle finishes)" if result.get("cycle_running") else ""),
                "resume": f"{name}: resumed",
                "reset": f"{name}: {result.get('checkpoints_removed', 0)} checkpoint(s) reset; "
                "the next cycle starts from the initial lookback",
            }[action]
        )
        typer.echo(f"state: {_poller_state(entry)}")

    pollers_app.command(action, help=_POLLER_HELP[action])(command)


for _action in ("run", "pause", "resume", "reset"):
    _poller_command(_action)


# --------------------------------------------------------------------------- events


@events_app.callback(
    help=(
        "Search the events stored by the ClickHouse sink, newest first.\n\n"
        "Subcommand: `tail` (follow events as they are published)."
    ),
)
def events(  # nosec B107
    ctx: typer.Context,
    event_id: Annotated[str | None, typer.Option("--id", help="CloudEvent id.")] = None,
    request_id: Annotated[
        str | None, typer.Option(help='The webhook\'s X-Request-ID ("where is my webhook?").')
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="CloudEvent type.")] = None,
    entity_id: Annotated[str | None, typer.Option(help="Only this entity id.")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339 time, inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="RFC 3339 time, exclusive.")] = None,
    limit: Annotated[int | None, typer.Option(help="Events per page (max 1000).")] = None,
    cursor: CursorOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    if ctx.invoked_subcommand is not None:
        _refuse_list_options(ctx, _EVENTS_SEARCH_ONLY)
        return
    params = _params(
        id=event_id,
        request_id=request_id,
        provider=provider,
        tenant=tenant,
        type=event_type,
        entity_id=entity_id,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    with AdminClient(url, token) as client:
        answer = client.call("GET", "/admin/events", params)
    if as_json:
        _print_json(answer)
        return
    found: list[dict[str, Any]] = answer.get("events", [])
    if not found:
        typer.echo("no stored event matches")
        return
    typer.echo(
        _table(
            ("TIME", "TYPE", "SUBJECT", "ID", "TENANT", "REQUEST_ID"),
            [
                (
                    str(e.get("time", "")),
                    str(e.get("type", "")),
                    str(e.get("subject", "")),
                    str(e.get("id", "")),
                    str(e.get("tenant_id") or ""),
                    str(e.get("request_id", "")),
                )
                for e in found
            ],
            widths={"SUBJECT": 40},
        )
    )
    if answer.get("next_cursor"):
        typer.echo(f"more: --cursor {answer['next_cursor']}")


_EVENTS_SEARCH_ONLY = (
    "event_id", "request_id", "provider", "tenant", "event_type", "entity_id", "since", "until",
    "limit", "cursor",
)  # fmt: skip


@events_app.command(
    "tail",
    help=(
        "Follow events as they are published (GET /admin/events/stream): one CloudEvent "
        "per line, as JSON, until Ctrl-C."
    ),
)
def events_tail(  # nosec B107
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="CloudEvent type.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    params = _params(provider=provider, tenant=tenant, type=event_type)
    with AdminClient(url, token) as client:
        try:
            for data in client.follow("/admin/events/stream", params):
                typer.echo(data)
        except KeyboardInterrupt:
            return


# --------------------------------------------------------------------------- following jobs


def _follow_to_end(
    client: AdminClient, answer: dict[str, Any], interval: float, as_json: bool
) -> NoReturn:
    """Poll the job of ``answer`` until it ends, printing each change; exit 0 when it
    succeeded, else 1. With ``as_json`` only the job's last state is printed."""
    job: dict[str, Any] = answer.get("job", {})
    job_id = str(job.get("job_id", ""))
    shown: tuple[Any, ...] | None = None
    try:
        while True:
            state = _progress_key(job)
            if state != shown and not as_json:
                typer.echo(_progress_line(job))
                shown = state
            if job.get("status") in TERMINAL:
                break
            time.sleep(interval)
            answer = client.call(
                "GET", f"/admin/replay-dlq/{_path_segment(job_id)}", wait_when_limited=True
            )
            job = answer.get("job", {})
    except KeyboardInterrupt:
        typer.echo(
            f"\nstopped following; job {_clean(job_id)} goes on on the server "
            f"(ensemble-tap admin jobs show {_clean(job_id)} --follow)",
            err=True,
        )
        raise typer.Exit(130) from None
    if as_json:
        _print_json(answer)
    else:
        _print_outcome(job)
    if job.get("status") == "succeeded":
        raise typer.Exit(0)
    raise typer.Exit(1)


def _announce(job: Mapping[str, Any], reused: bool) -> None:
    job_id = _clean(job.get("job_id", ""))
    what = "dry run" if job.get("dry_run") else "replay"
    scope = _filters(job)
    limit = f"up to {job.get('effective_limit', '?')} records"
    if reused:
        typer.echo(f"idempotency key already used: following existing {what} job {job_id}")
    else:
        typer.echo(f"{what} job {job_id} accepted: {limit}" + (f", {scope}" if scope else ""))
    if job.get("capped"):
        typer.echo(
            f"note: limit {job.get('requested_limit', 'default')} capped to "
            f"{job.get('max_limit')} (server.admin_replay_max_limit)"
        )


def _progress_key(job: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(
        job.get(key) for key in ("status", "replayed", "skipped", "failed", "would_replay")
    )


def _progress_line(job: Mapping[str, Any]) -> str:
    status = _clean(job.get("status", "?"))
    if job.get("dry_run"):
        counts = f"would replay {job.get('would_replay', 0)}  skipped {job.get('skipped', 0)}"
    else:
        counts = (
            f"replayed {job.get('replayed', 0)}  skipped {job.get('skipped', 0)}  "
            f"failed {job.get('failed', 0)}"
        )
    return f"  {status:<10} {counts}"


def _print_outcome(job: Mapping[str, Any]) -> None:
    job_id = _clean(job.get("job_id", ""))
    status = job.get("status")
    if job.get("dry_run"):
        typer.echo(
            f"dry run {job_id} {_clean(status)}: {job.get('would_replay', 0)} record(s) would "
            f"be replayed, {job.get('skipped', 0)} skipped (not replayable)"
        )
    else:
        typer.echo(
            f"replay {job_id} {_clean(status)}: replayed {job.get('replayed', 0)}, "
            f"skipped {job.get('skipped', 0)} (not replayable), failed {job.get('failed', 0)}"
        )
    _print_failures(job)
    if status == "failed":
        typer.echo(f"error: job {job_id} failed: {_clean(job.get('error', 'unknown'))}", err=True)
    elif status == "cancelled":
        why = job.get("cancel_reason")
        typer.echo(
            f"error: job {job_id} was cancelled" + (f": {_clean(why)}" if why else ""), err=True
        )
    elif job.get("failed"):
        typer.echo(
            f"warning: {job['failed']} record(s) could not be replayed and stay in the DLQ "
            "(see the table above; `ensemble-tap admin dlq` lists them)",
            err=True,
        )


def _print_failures(job: Mapping[str, Any]) -> None:
    failures: list[dict[str, Any]] = job.get("failures") or []
    if not failures:
        return
    typer.echo(f"\nfailed records (still in the DLQ; {job.get('failed', len(failures))} in all):")
    typer.echo(
        _table(
            ("SEQ", "RECORD_ID", "ERROR"),
            [
                (str(f.get("sequence", "")), f.get("record_id", ""), f.get("error", ""))
                for f in failures
            ],
            numeric={"SEQ"},
            widths={"ERROR": 100},
        )
    )


def _print_job(job: Mapping[str, Any]) -> None:
    limit = str(job.get("effective_limit", ""))
    if job.get("requested_limit"):
        limit += f" (requested {job['requested_limit']})"
    if job.get("capped"):
        limit += f", capped at max {job.get('max_limit')}"
    rows: list[tuple[str, Any]] = [
        ("job_id", job.get("job_id")),
        ("status", job.get("status")),
        ("mode", "dry run" if job.get("dry_run") else "replay"),
        ("filters", _filters(job) or "none"),
        ("limit", limit),
        ("created_at", job.get("created_at")),
        ("started_at", job.get("started_at")),
        ("completed_at", job.get("completed_at")),
        ("would_replay", job.get("would_replay") if job.get("dry_run") else None),
        ("replayed", job.get("replayed")),
        ("skipped", job.get("skipped")),
        ("failed", job.get("failed")),
        ("request_id", job.get("request_id")),
        ("operator_reason", job.get("operator_reason")),
        ("cancel_reason", job.get("cancel_reason")),
        ("error", job.get("error")),
    ]
    _print_fields(rows)
    _print_failures(job)


def _print_fields(rows: Sequence[tuple[str, Any]]) -> None:
    """``name  value`` lines, names aligned; unset values left out."""
    shown = [(name, str(value)) for name, value in rows if value is not None and value != ""]
    width = max((len(name) for name, _ in shown), default=0)
    for name, value in shown:
        typer.echo(f"{name:<{width}}  {_clean(value)}")


# --------------------------------------------------------------------------- helpers


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _normalise_url(url: str) -> str:
    url = url.strip().rstrip("/") or DEFAULT_URL
    return url if "://" in url else f"http://{url}"


def _short(value: object, limit: int = 200) -> str:
    text = _clean(str(value)) or type(value).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), MAX_RETRY_AFTER)


_HINTS = {
    401: (
        f"the token in {TOKEN_ENV} is missing, wrong, or its slot lacks the scope this command "
        "needs (read: dlq/jobs/pollers, replay: replay, cancel: jobs cancel)"
    ),
    403: (
        "the server refuses this client: check server.admin_allowed_cidrs, "
        "server.trusted_proxies and server.admin_mtls_required"
    ),
}


def _describe_error(response: httpx.Response, url: str) -> str:
    """One line: the API's error text, the HTTP status, the request id and, when useful, what
    to check."""
    status = response.status_code
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    envelope = isinstance(body, dict) and "error" in body
    request_id = (body.get("request_id") if isinstance(body, dict) else None) or (
        response.headers.get("X-Request-ID", "")
    )
    if not envelope:
        if status in (404, 405):
            return (
                f"HTTP {status} from {url}{response.request.url.path}: no admin API there; "
                "set server.admin_token (or a role token) on the server to enable it"
            )
        return f"HTTP {status} from {url}{response.request.url.path}: {_short(response.text)}"
    assert isinstance(body, dict)
    line = f"{_short(body['error'])} (HTTP {status}"
    line += f", request id {_short(request_id, 100)})" if request_id else ")"
    if status == 429:
        line += f": retry after {response.headers.get('Retry-After', '1')}s"
    elif status in _HINTS:
        line += ": " + _HINTS[status]
    return line


def _merged(
    pages: list[dict[str, Any]], key: str, as_json: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The items under ``key`` of every page, and the last page; with ``as_json`` also print
    them as one answer (the single page as it came, or the pages merged)."""
    items = [item for page in pages for item in page.get(key, [])]
    last = pages[-1]
    if as_json:
        if len(pages) == 1:
            _print_json(last)
        else:
            merged = {key: items, "count": len(items), "next_cursor": last.get("next_cursor", "")}
            _print_json({**merged, "summary": last.get("summary", {})})
    return items, last


def _params(**values: object) -> dict[str, str]:
    return {key: str(value) for key, value in values.items() if value not in (None, "")}


def _pages(
    client: AdminClient,
    path: str,
    params: Mapping[str, str],
    cursor: str | None,
    all_pages: bool,
) -> Iterator[dict[str, Any]]:
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        page = client.call("GET", path, query, wait_when_limited=all_pages)
        yield page
        cursor = page.get("next_cursor") or ""
        if not all_pages or not cursor:
            return


def _more_hint(page: Mapping[str, Any], command: str) -> None:
    cursor = page.get("next_cursor")
    if cursor:
        typer.echo(f"more: {command} --cursor {_clean(cursor)}  (or --all-pages)")


def _filters(job: Mapping[str, Any]) -> str:
    return " ".join(
        f"{key}={_clean(job[key])}"
        for key in ("provider", "stage", "tenant", "sequence")
        if job.get(key)
    )


def _inherit(ctx: typer.Context, **values: Any) -> tuple[Any, ...]:
    """Options given to ``jobs`` before the subcommand (``jobs --url U show ID``) apply to it
    unless the subcommand has its own on the command line."""
    parent = ctx.parent
    resolved = []
    for name, value in values.items():
        if (
            parent is not None
            and not _on_command_line(ctx, name)
            and _on_command_line(parent, name)
        ):
            value = parent.params[name]
        resolved.append(value)
    return tuple(resolved)


class _HasSources(Protocol):
    def get_parameter_source(self, name: str) -> Any: ...


def _on_command_line(ctx: _HasSources, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _path_segment(job_id: str) -> str:
    from urllib.parse import quote

    return quote(job_id.strip(), safe="")


def _time(value: object) -> str:
    """An RFC 3339 time to the second (tables only; --json keeps the full value)."""
    return _FRACTION.sub("Z", str(value)) if value else ""


def _clean(value: object) -> str:
    """Text from the server made safe for a terminal: control characters (escape sequences in
    a forged request id, newlines in a reason) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in str(value))


def _clean_block(text: str) -> str:
    """Like ``_clean``, but keeping line breaks and tabs (a body's layout)."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    numeric: frozenset[str] | set[str] = frozenset(),
    widths: Mapping[str, int] | None = None,
) -> str:
    """Plain columns separated by two spaces; numeric columns right-aligned, long cells cut."""
    limits = widths or {}
    cells = [
        [
            _cut(_clean(cell), limits.get(header, 200))
            for header, cell in zip(headers, row, strict=True)
        ]
        for row in rows
    ]
    sizes = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(size) if header in numeric else value.ljust(size)
            for header, value, size in zip(headers, values, sizes, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _print_json(body: object) -> None:
    typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


__all__ = ["app"]
