"""Salesforce REST: SOQL via queryAll (recycle-bin rows with IsDeleted), batch size from
Sforce-Query-Options, nextRecordsUrl locators, 403 REQUEST_LIMIT_EXCEEDED, and the delete log
of purged records ("Get Deleted Records": ``sobjects/{object}/deleted/?start=…&end=…``,
ISO-8601 times whose seconds it ignores, windows of at most 30 days; ``deletedRecords`` of
``{id, deletedDate}``, ``earliestDateAvailable``, ``latestDateCovered``)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from tests.support.fakes import FakeServer, Seen, at, json_response

_SELECT = re.compile(
    r"^SELECT (?P<fields>.+?) FROM (?P<obj>\w+)(?: WHERE (?P<where>.+?))?"
    r" ORDER BY SystemModstamp ASC, Id ASC$"
)
_GTE = re.compile(r"^SystemModstamp >= (\S+)$")
_KEYSET = re.compile(
    r"^\(SystemModstamp > (\S+) OR \(SystemModstamp = (\S+) AND Id > '([^']*)'\)\)$"
)


DAY = 86_400 * 1_000_000_000


def _minute(ns: int) -> int:
    return ns - ns % (60 * 1_000_000_000)


def sf_time(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.000+0000"


@dataclass
class SalesforceRecord:
    id: str
    modstamp_ns: int
    fields: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False


class FakeSalesforce(FakeServer):
    name = "salesforce"

    def __init__(self, token: str = "sf-token") -> None:
        super().__init__(token)
        self.objects: dict[str, dict[str, SalesforceRecord]] = {}
        self.locators: dict[str, list[dict[str, Any]]] = {}
        self.delete_log: dict[str, dict[str, int]] = {}  # object → id → deleted at
        self._ids = itertools.count(1)

    def put(self, obj: str, record_id: str, modstamp_ns: int, **fields: Any) -> None:
        self.objects.setdefault(obj, {})[record_id] = SalesforceRecord(
            record_id, modstamp_ns, dict(fields)
        )

    def delete(self, obj: str, record_id: str, modstamp_ns: int) -> None:
        record = self.objects[obj][record_id]
        record.deleted = True
        record.modstamp_ns = modstamp_ns

    def purge(self, obj: str, record_id: str, deleted_ns: int) -> None:
        """Deleted and purged from the recycle bin: gone from queryAll, left in the log."""
        del self.objects[obj][record_id]
        self.delete_log.setdefault(obj, {})[record_id] = deleted_ns

    def limit_exceeded_next(self) -> None:
        self.fail_next(
            403,
            [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
        )

    def unauthorized(self) -> Response:
        return json_response(
            [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401
        )

    def route(self, seen: Seen) -> Response:
        parts = seen.path.strip("/").split("/")
        if parts[:2] != ["services", "data"] or len(parts) < 4:
            return json_response([{"errorCode": "NOT_FOUND"}], 404)
        if len(parts) == 6 and parts[3] == "sobjects" and parts[5] == "deleted":
            return self.deleted(parts[4], seen)
        if len(parts) == 5 and parts[3] == "queryAll":
            return self.batch(parts[4])
        if len(parts) == 4 and parts[3] in ("query", "queryAll"):
            size = 2000
            options = seen.headers.get("sforce-query-options", "")
            if options.startswith("batchSize="):
                size = int(options.split("=", 1)[1])
            return self.query(seen.query["q"][0], parts[3] == "queryAll", size, parts[2])
        return json_response([{"errorCode": "NOT_FOUND"}], 404)

    def query(self, soql: str, include_deleted: bool, size: int, version: str) -> Response:
        match = _SELECT.match(soql)
        if match is None:
            return json_response([{"errorCode": "MALFORMED_QUERY", "message": soql}], 400)
        obj = match["obj"]
        rows = [r for r in self.objects.get(obj, {}).values() if include_deleted or not r.deleted]
        where = match["where"]
        if where:
            if (gte := _GTE.match(where)) is not None:
                since = at(gte[1])
                rows = [r for r in rows if r.modstamp_ns >= since]
            elif (keyset := _KEYSET.match(where)) is not None:
                since, after_id = at(keyset[1]), keyset[3]
                rows = [
                    r for r in rows
                    if r.modstamp_ns > since or (r.modstamp_ns == since and r.id > after_id)
                ]  # fmt: skip
            else:
                return json_response([{"errorCode": "MALFORMED_QUERY", "message": where}], 400)
        rows.sort(key=lambda r: (r.modstamp_ns, r.id))
        records = [self._render(obj, r, version) for r in rows]
        locator = f"01g{next(self._ids):05d}"
        self.locators[locator] = records
        return self._page(locator, 0, size, version)

    def deleted(self, obj: str, seen: Seen) -> Response:
        try:
            start, end = (_minute(at(seen.query[name][0])) for name in ("start", "end"))
        except (KeyError, ValueError):
            return json_response([{"errorCode": "MALFORMED_QUERY"}], 400)
        if not start < end or end - start > 30 * DAY:
            return json_response([{"errorCode": "INVALID_REPLICATION_DATE"}], 400)
        log = self.delete_log.get(obj, {})
        found = [
            {"id": record_id, "deletedDate": sf_time(when)}
            for record_id, when in sorted(log.items(), key=lambda item: item[1])
            if start <= when < end
        ]
        earliest = min(log.values(), default=end)
        return json_response(
            {
                "deletedRecords": found,
                "earliestDateAvailable": sf_time(earliest),
                "latestDateCovered": sf_time(end),
            }
        )

    def batch(self, locator_offset: str) -> Response:
        locator, _, offset = locator_offset.partition("-")
        if locator not in self.locators:
            return json_response([{"errorCode": "INVALID_QUERY_LOCATOR"}], 400)
        size = int(offset.split(":")[1])
        return self._page(locator, int(offset.split(":")[0]), size, "v59.0")

    def _page(self, locator: str, offset: int, size: int, version: str) -> Response:
        records = self.locators[locator]
        chunk = records[offset : offset + size]
        reply: dict[str, Any] = {
            "totalSize": len(records),
            "done": offset + size >= len(records),
            "records": chunk,
        }
        if not reply["done"]:
            reply["nextRecordsUrl"] = (
                f"/services/data/{version}/queryAll/{locator}-{offset + size}:{size}"
            )
        return json_response(reply)

    @staticmethod
    def _render(obj: str, record: SalesforceRecord, version: str) -> dict[str, Any]:
        return {
            "attributes": {
                "type": obj,
                "url": f"/services/data/{version}/sobjects/{obj}/{record.id}",
            },
            "Id": record.id,
            **record.fields,
            "IsDeleted": record.deleted,
            "SystemModstamp": sf_time(record.modstamp_ns),
            "LastModifiedDate": sf_time(record.modstamp_ns),
        }
