"""The webhook path's version recorder (webhook+poll, state/versions.py): notes cost no I/O,
batches are written in the background, and a failure is counted, never raised."""

from __future__ import annotations

from pathlib import Path

from ensemble_tap.state import MemoryStateStore, SqliteStateStore
from ensemble_tap.state.versions import SeenVersion, VersionRecorder
from tests.support.fakes import at
from tests.support.waiting import eventually

T1 = at("2026-03-03T14:00:00Z")
T2 = at("2026-03-03T14:05:00Z")


def test_covers() -> None:
    seen = SeenVersion(T2)
    assert seen.covers(T1, False) and seen.covers(T2, False)
    assert not seen.covers(T2 + 1, False)
    assert not seen.covers(None, False)  # a record without a time: cannot be compared
    assert not seen.covers(None, True)  # a delete the webhook did not bring
    assert SeenVersion(T1, deleted=True).covers(None, True)  # a delete both paths saw


def test_merged() -> None:
    old, new = SeenVersion(T1), SeenVersion(T2)
    assert old.merged(new) == new and new.merged(old) == new
    gone = SeenVersion(T1, deleted=True)
    assert old.merged(gone) == gone and gone.merged(old) == gone
    assert new.merged(None) == new


async def test_notes_wait_for_the_store_then_are_written_in_one_batch() -> None:
    lost: list[tuple[str, int]] = []
    recorder = VersionRecorder(lost=lambda reason, count: lost.append((reason, count)))
    recorder.note("hubspot", "deal", "1", T1, False)  # before the store is open: kept
    recorder.note("hubspot", "deal", "1", T2, False)
    recorder.note("hubspot", "deal", "2", T1, True)
    store = MemoryStateStore()
    recorder.attach(store)

    async def written() -> bool:
        found = await store.get_versions("hubspot", [("deal", "1"), ("deal", "2")])
        return found == {("deal", "1"): SeenVersion(T2), ("deal", "2"): SeenVersion(T1, True)}

    await eventually(written, timeout=5)
    recorder.note("hubspot", "deal", "3", T1, False)
    await recorder.close()  # writes what is pending
    assert await store.get_versions("hubspot", [("deal", "3")]) == {("deal", "3"): SeenVersion(T1)}
    assert lost == []


async def test_a_full_buffer_and_a_failing_store_are_counted_not_raised(tmp_path: Path) -> None:
    lost: list[tuple[str, int]] = []
    recorder = VersionRecorder(
        lost=lambda reason, count: lost.append((reason, count)), max_pending=2
    )
    for entity in ("1", "2", "3"):
        recorder.note("hubspot", "deal", entity, T1, False)  # no store yet: the third is lost
    assert lost == [("full", 1)]
    store = SqliteStateStore(str(tmp_path / "state.db"))
    await store.close()  # every write now fails
    recorder.attach(store)
    await recorder.close()
    assert lost == [("full", 1), ("error", 2)]
