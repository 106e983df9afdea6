"""``ensemble-tap state migrate --from sqlite --to nats``: the SQLite state of a single
process copied into the NATS buckets, so replicas resume where it left off.

Only keys missing in NATS are written: a second run copies nothing, and a run after the
replicas started never overwrites what they committed since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ensemble_tap.state import kv_keys
from ensemble_tap.state.base import StreamState
from ensemble_tap.state.jetstream import NatsStateStore, encode_token, encode_version
from ensemble_tap.state.sqlite import SqliteStateStore


@dataclass(slots=True)
class Counts:
    copied: int = 0
    present: int = 0  # already in NATS: left as it is

    def add(self, created: bool) -> None:
        if created:
            self.copied += 1
        else:
            self.present += 1


@dataclass(slots=True)
class MigrationReport:
    checkpoints: Counts = field(default_factory=Counts)
    legacy_checkpoints: Counts = field(default_factory=Counts)
    snapshots: Counts = field(default_factory=Counts)
    tokens: Counts = field(default_factory=Counts)
    versions: Counts = field(default_factory=Counts)  # webhook+poll: newest seen by webhook
    pauses: Counts = field(default_factory=Counts)

    def lines(self) -> list[str]:
        return [
            f"{name.replace('_', ' ')}: {counts.copied} copied, {counts.present} already in nats"
            for name, counts in (
                ("checkpoints", self.checkpoints),
                ("legacy_checkpoints", self.legacy_checkpoints),
                ("snapshots", self.snapshots),
                ("tokens", self.tokens),
                ("webhook_versions", self.versions),
                ("pauses", self.pauses),
            )
        ]


async def sqlite_to_nats(source: SqliteStateStore, target: NatsStateStore) -> MigrationReport:
    dump = await source.export()
    report = MigrationReport()
    for state_key, stream, state in dump.streams:
        key = kv_keys.checkpoint_key(state_key, stream)
        report.checkpoints.add(await target.import_value(key, state.to_json()))
    for state_key, cursor_ns in dump.legacy:
        value = StreamState(cursor_ns=cursor_ns).to_json()
        report.legacy_checkpoints.add(
            await target.import_value(kv_keys.legacy_key(state_key), value)
        )
    for state_key, entity_type, entity_id, snapshot in dump.snapshots:
        report.snapshots.add(
            await target.import_snapshot(
                state_key, entity_type=entity_type, entity_id=entity_id, snapshot=snapshot
            )
        )
    for state_key, token in dump.tokens:
        value = encode_token(token)
        report.tokens.add(await target.import_value(kv_keys.token_key(state_key), value))
    for state_key, entity_type, entity_id, seen in dump.versions:
        key = kv_keys.version_key(state_key, entity_type, entity_id)
        report.versions.add(await target.import_value(key, encode_version(seen)))
    for state_key, control in dump.controls:
        key = kv_keys.control_key(state_key)
        report.pauses.add(await target.import_value(key, control.to_json()))
    return report
