"""Salesforce polling (SOQL over the REST API).

This module holds only the poller: Salesforce webhooks (outbound messages forwarded by a
relay) go through the generic HMAC handler, like any provider without a dedicated verifier.

Each configured sObject is one stream, read with
``GET {base}/services/data/{api_version}/queryAll?q=SELECT … ORDER BY SystemModstamp, Id``.
``queryAll`` includes records in the recycle bin (``IsDeleted = true``), which become
``deleted`` events; records purged from the recycle bin before a pass saw them (emptied, or
after 15 days) are read from the delete log, ``GET …/sobjects/{object}/deleted/?start=…&end=…``
("Get Deleted Records"), for the window since the stream's checkpoint (at most 30 days),
every ``poll_delete_interval``. Pages follow ``nextRecordsUrl`` (batch size via
``Sforce-Query-Options``); across cycles a pass resumes from the last record finished, as a
keyset ``(SystemModstamp, Id)``, because query locators expire.

The cursor is ``SystemModstamp`` rather than ``LastModifiedDate``: it also changes when a
record is deleted or updated by the system, and it is the indexed field Salesforce recommends
for replication. Events still carry ``LastModifiedDate`` as their time. Salesforce reports an
exhausted API allowance as ``403 REQUEST_LIMIT_EXCEEDED``: that is rate limiting, not an
expired token, so it never triggers a token refresh.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, urlencode

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import format_time_ns
from ensemble_tap.providers.common import provider_time_ns, to_string
from ensemble_tap.providers.contract import (
    Page,
    PollHTTP,
    Position,
    Provider,
    Record,
    Response,
    Stream,
    StreamContext,
    base_url,
    dig,
    objects_of,
    scan_period,
)

SALESFORCE_OBJECTS = ("Opportunity",)
SALESFORCE_API_VERSION = "v59.0"
SALESFORCE_PAGE_SIZE = 200  # Salesforce's smallest batch size
SALESFORCE_MAX_PAGE_SIZE = 2000  # and its largest
CURSOR_FIELD = "SystemModstamp"
REQUIRED_FIELDS = ("Id", CURSOR_FIELD, "LastModifiedDate", "IsDeleted")
# The daily API allowance does not come back in seconds.
REQUEST_LIMIT_WAIT = 300.0
# Get Deleted Records answers for windows of at most 30 days back (a day's margin kept).
DELETE_LOG_WINDOW_NS = 29 * 86_400 * 1_000_000_000


def soql_time(ns: int) -> str:
    """A SOQL dateTime literal (second precision, UTC, unquoted)."""
    return format_time_ns(ns - ns % 1_000_000_000)


def soql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_API_VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")


class SalesforcePoller:
    headers: Mapping[str, str] = {"Accept": "application/json"}
    basic_token_auth = False
    token_key = "secret"  # the name of the config key with the token  # nosec B105
    max_page_size = SALESFORCE_MAX_PAGE_SIZE
    required_keys = ()
    # sObject names are spliced into SOQL: no quoting tricks possible.
    object_name = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,100}$")
    reads_fields = True

    def target_problems(self, settings: ProviderConfig) -> Iterator[str]:
        version = settings.api_version.strip()
        if version and not _API_VERSION.match(version):
            yield "api_version must look like v59.0"

    def settings_warnings(self, settings: ProviderConfig) -> Iterator[tuple[str, str]]:
        return iter(())

    def streams(self, settings: ProviderConfig, context: StreamContext) -> list[Stream]:
        version = settings.api_version.strip() or SALESFORCE_API_VERSION
        page_size = settings.query_per_page or SALESFORCE_PAGE_SIZE
        fields = [name.strip() for name in (settings.fields or []) if name.strip()]
        base = base_url(settings)
        period = scan_period(context.interval, context.delete_interval)
        streams: list[Stream] = []
        for name in objects_of(settings, SALESFORCE_OBJECTS):
            streams.append(SalesforceStream(base, version, name, fields, page_size))
            streams.append(SalesforceDeleteLog(base, version, name, period, context.now_ns))
        return streams

    def rate_limit_hint(self, response: Response) -> float | None:
        if response.status == 403 and b"REQUEST_LIMIT_EXCEEDED" in response.body:
            return REQUEST_LIMIT_WAIT
        return None


class SalesforceStream:
    period = 1

    def __init__(
        self, base: str, version: str, object_name: str, fields: list[str], page_size: int
    ) -> None:
        self.name = object_name
        self.base = base
        self.version = version
        self.object_name = object_name
        self.entity_type = object_name.lower()
        # FIELDS(STANDARD) holds Id, SystemModstamp, LastModifiedDate and IsDeleted.
        self.select = (
            ", ".join(dict.fromkeys((*REQUIRED_FIELDS, *fields))) if fields else "FIELDS(STANDARD)"
        )
        self.page_size = max(SALESFORCE_PAGE_SIZE, min(page_size, SALESFORCE_MAX_PAGE_SIZE))

    def soql(self, position: Position) -> str:
        # SOQL sent to Salesforce's API: object and field names are validated config.
        query = f"SELECT {self.select} FROM {self.object_name}"  # nosec B608
        since = position.since_ns
        after_id = to_string(dig(position.token, "after_id"))
        if since is not None and after_id:
            literal = soql_time(since)
            query += (
                f" WHERE ({CURSOR_FIELD} > {literal} OR "
                f"({CURSOR_FIELD} = {literal} AND Id > {soql_string(after_id)}))"
            )
        elif since is not None:
            query += f" WHERE {CURSOR_FIELD} >= {soql_time(since)}"
        return query + f" ORDER BY {CURSOR_FIELD} ASC, Id ASC"

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
        await http.auth.token()  # a token response names the org's API host (instance_url)
        base = http.auth.instance_url or self.base
        url = f"{base}/services/data/{self.version}/queryAll?q={quote_plus(self.soql(start))}"
        headers = {"Sforce-Query-Options": f"batchSize={self.page_size}"}
        position = start
        while True:
            reply = await http.request("GET", url, headers=headers)
            data = reply.json_object("salesforce")
            rows = data.get("records")
            records = [
                record
                for row in (rows if isinstance(rows, list) else [])
                if (record := self.record(row)) is not None
            ]
            following = to_string(data.get("nextRecordsUrl"))
            newest = max((r.version_ns for r in records if r.version_ns is not None), default=None)
            after_next: Position | None = None
            if following and not data.get("done", False):
                last = records[-1] if records else None
                after_next = (
                    Position(last.version_ns, {"after_id": last.entity_id})
                    if last is not None and last.version_ns is not None
                    else position
                )
            yield Page(records, position, after_next, newest)
            if after_next is None:
                return
            position = after_next
            url = following if following.startswith("http") else f"{base}{following}"

    def record(self, row: Any) -> Record | None:
        if not isinstance(row, dict):
            return None
        entity_id = to_string(row.get("Id"))
        if not entity_id:
            return None
        version = provider_time_ns(row.get(CURSOR_FIELD))
        modified = provider_time_ns(row.get("LastModifiedDate"))
        if row.get("IsDeleted") is True:
            return Record(self.entity_type, entity_id, None, version, deleted=True)
        return Record(self.entity_type, entity_id, dict(row), version, time_ns=modified)


def iso_minute(ns: int) -> str:
    """``2026-03-03T14:22:00+00:00``: the delete log's ISO-8601 form (it ignores seconds)."""
    moment = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M}:00+00:00"


class SalesforceDeleteLog:
    """Records purged from the recycle bin before ``queryAll`` saw them deleted: the delete
    log for the window since the checkpoint, one request per read (a delete list with a
    cost, read every ``poll_delete_interval``). The checkpoint is Salesforce's
    ``latestDateCovered``; a delete of a record this state never saw is skipped."""

    def __init__(
        self, base: str, version: str, object_name: str, period: int, now_ns: Callable[[], int]
    ) -> None:
        self.name = f"{object_name}#deleted"
        self.base = base
        self.version = version
        self.object_name = object_name
        self.entity_type = object_name.lower()
        self.period = period
        self.now_ns = now_ns

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
        await http.auth.token()
        base = http.auth.instance_url or self.base
        end = self.now_ns()
        # The log reaches back at most 30 days; an older checkpoint loses what lies before.
        since = max(start.since_ns or 0, end - DELETE_LOG_WINDOW_NS)
        query = urlencode({"start": iso_minute(since), "end": iso_minute(end)})
        url = f"{base}/services/data/{self.version}/sobjects/{self.object_name}/deleted/"
        reply = await http.request("GET", f"{url}?{query}")
        data = reply.json_object("salesforce")
        rows = data.get("deletedRecords")
        records = [
            Record(self.entity_type, entity_id, None, provider_time_ns(row.get("deletedDate")),
                   deleted=True)
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, dict) and (entity_id := to_string(row.get("id")))
        ]  # fmt: skip
        covered = provider_time_ns(data.get("latestDateCovered"))
        yield Page(records, start, None, covered)


PROVIDER = Provider("salesforce", poller=SalesforcePoller())
