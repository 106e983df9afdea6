"""The spool log: order, durability before the await returns, group commit, the bound,
the cursor across reopen, segments deleted once drained, disk errors."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from ensemble_tap.observability import Metrics
from ensemble_tap.spool import (
    SpoolClosed,
    SpoolFull,
    SpoolLocked,
    SpoolLog,
    SpoolWriteError,
)
from tests.support.spool import RecordingFsync, drain_all, read_all


def _segments(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".seg"))


async def _open(directory: Path, **options: object) -> SpoolLog:
    values: dict[str, object] = {"max_bytes": 64 * 1024 * 1024, **options}
    log = SpoolLog(directory, **values)  # type: ignore[arg-type]
    await log.open()
    return log


async def test_records_come_back_in_append_order_with_every_field(tmp_path: Path) -> None:
    log = await _open(tmp_path)
    await log.append("tap.acme.invoice.paid", b'{"n":0}', "dedup-0", "req-0")
    # Concurrent appends keep the order in which they were called.
    await asyncio.gather(
        *(log.append(f"tap.acme.e.{i}", b"x" * i, f"dedup-{i}", f"req-{i}") for i in range(1, 50))
    )
    records = await read_all(log)
    assert [r.msg_id for r in records] == [f"dedup-{i}" for i in range(50)]
    assert records[0].subject == "tap.acme.invoice.paid"
    assert records[0].payload == b'{"n":0}'
    assert records[0].request_id == "req-0"
    assert all(r.payload == b"x" * i for i, r in enumerate(records) if i)
    assert all(a.end == b.position for a, b in itertools.pairwise(records))
    await log.close()


async def test_a_large_body_is_stored_as_is(tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024)  # binary, larger than a read chunk and max_bytes
    log = await _open(tmp_path)
    await log.append("tap.acme.big", body, "big", "")
    await log.append("tap.acme.small", b"{}", "small", "")
    first = await log.read_batch(10, max_bytes=1024)  # at least one record, whatever its size
    assert [r.msg_id for r in first] == ["big"]
    assert first[0].payload == body
    await log.close()


async def test_many_concurrent_appends_share_one_fsync(tmp_path: Path) -> None:
    fsync = RecordingFsync()
    log = await _open(tmp_path, fsync=fsync)
    await asyncio.gather(*(log.append("tap.a.b", b"{}", f"id-{i}") for i in range(500)))
    # All 500 were queued before the writer ran: one write, one file fsync (plus the
    # directory fsync that made the new segment's name durable).
    assert fsync.files == 1
    assert fsync.dirs == 1
    assert log.depth_events == 500
    await log.close()


async def test_appends_arriving_during_an_fsync_are_committed_by_the_next_one(
    tmp_path: Path,
) -> None:
    fsync = RecordingFsync()
    log = await _open(tmp_path, fsync=fsync)
    fsync.hold()
    first = asyncio.create_task(log.append("tap.a.b", b"{}", "first"))
    assert await asyncio.to_thread(fsync.entered.wait, 10)
    later = [asyncio.create_task(log.append("tap.a.b", b"{}", f"later-{i}")) for i in range(200)]
    await asyncio.sleep(0)  # let every later append queue up
    # Nothing returns before its fsync has completed.
    assert not first.done()
    assert not any(task.done() for task in later)
    fsync.release()
    await asyncio.gather(first, *later)
    assert fsync.files == 2  # the held one, then one for all 200
    assert [r.msg_id for r in await read_all(log)] == ["first"] + [f"later-{i}" for i in range(200)]
    await log.close()


async def test_the_bound_rejects_appends_and_draining_frees_the_space(tmp_path: Path) -> None:
    metrics = Metrics()
    log = await _open(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024, metrics=metrics)
    accepted = 0
    with pytest.raises(SpoolFull) as full:
        while True:
            await log.append("tap.a.b", b"x" * 1000, f"id-{accepted}")
            accepted += 1
    assert full.value.max_bytes == 64 * 1024
    assert accepted > 50
    assert log.disk_bytes <= 64 * 1024
    assert metrics.registry.get_sample_value("tap_spool_rejected_total") == 1
    assert metrics.registry.get_sample_value("tap_spool_depth_bytes") == log.disk_bytes

    assert len(await drain_all(log)) == accepted
    assert log.disk_bytes == 0
    assert _segments(tmp_path) == []  # every drained segment deleted, the active one too
    await log.append("tap.a.b", b"x" * 1000, "after")
    assert [r.msg_id for r in await read_all(log)] == ["after"]
    await log.close()


async def test_a_partial_drain_deletes_only_segments_the_cursor_passed(tmp_path: Path) -> None:
    log = await _open(tmp_path, segment_bytes=4096)
    for i in range(20):  # one append at a time: one batch each, a new segment every ~3
        await log.append("tap.a.b", b"x" * 1000, f"id-{i}")
    before = _segments(tmp_path)
    assert len(before) >= 5
    first = await log.read_batch(10)
    await log.commit(first)
    after = _segments(tmp_path)
    assert after == [name for name in before if int(name[:-4]) >= log.cursor.segment]
    assert len(after) < len(before)
    assert log.disk_bytes == sum(os.path.getsize(tmp_path / name) for name in after)
    assert [r.msg_id for r in await drain_all(log)] == [f"id-{i}" for i in range(10, 20)]
    await log.close()


async def test_the_cursor_survives_a_reopen_and_nothing_is_read_twice(tmp_path: Path) -> None:
    log = await _open(tmp_path, segment_bytes=2048)
    for i in range(30):
        await log.append("tap.a.b", b"y" * 300, f"id-{i}")
    await log.commit(await log.read_batch(12))
    read_not_committed = await log.read_batch(5)
    assert [r.msg_id for r in read_not_committed] == [f"id-{i}" for i in range(12, 17)]
    await log.close()

    log = await _open(tmp_path, segment_bytes=2048)
    assert log.depth_events == 18
    await log.append("tap.a.b", b"z", "id-30")
    assert [r.msg_id for r in await drain_all(log)] == [f"id-{i}" for i in range(12, 31)]
    await log.close()

    log = await _open(tmp_path, segment_bytes=2048)
    assert log.depth_events == 0
    assert await log.read_batch() == []
    await log.close()


async def test_metrics_follow_depth_and_age(tmp_path: Path) -> None:
    now = [1000.0]
    metrics = Metrics()
    log = await _open(tmp_path, metrics=metrics, clock=lambda: now[0])
    sample = metrics.registry.get_sample_value
    assert sample("tap_spool_oldest_age_seconds") == 0
    await log.append("tap.a.b", b"{}", "a")
    now[0] = 1010.0
    await log.append("tap.a.b", b"{}", "b")
    now[0] = 1030.0
    assert sample("tap_spool_depth_events") == 2
    assert sample("tap_spool_spooled_total") == 2
    assert sample("tap_spool_oldest_age_seconds") == 30
    first = await log.read_batch(1)
    await log.commit(first)
    assert sample("tap_spool_depth_events") == 1
    assert sample("tap_spool_oldest_age_seconds") == 20  # "b" is the oldest now
    await drain_all(log)
    assert sample("tap_spool_depth_events") == 0
    assert sample("tap_spool_depth_bytes") == 0
    assert sample("tap_spool_oldest_age_seconds") == 0
    await log.close()


async def test_a_failed_fsync_fails_the_batch_and_leaves_the_log_clean(tmp_path: Path) -> None:
    fsync = RecordingFsync()
    metrics = Metrics()
    log = await _open(tmp_path, fsync=fsync, metrics=metrics)
    await log.append("tap.a.b", b"{}", "kept-1")
    fsync.fail_next = 1
    with pytest.raises(SpoolWriteError):
        await log.append("tap.a.b", b"lost", "failed")
    await log.append("tap.a.b", b"{}", "kept-2")
    assert [r.msg_id for r in await read_all(log)] == ["kept-1", "kept-2"]
    await log.close()

    log = await _open(tmp_path, metrics=metrics)
    assert [r.msg_id for r in await read_all(log)] == ["kept-1", "kept-2"]
    assert metrics.registry.get_sample_value("tap_spool_corrupt_records_total") == 0
    await log.close()


async def test_one_process_owns_a_spool_directory(tmp_path: Path) -> None:
    log = await _open(tmp_path)
    with pytest.raises(SpoolLocked):
        await _open(tmp_path)
    await log.close()
    again = await _open(tmp_path)  # released by close
    await again.close()


async def test_appends_need_an_open_log(tmp_path: Path) -> None:
    log = SpoolLog(tmp_path, max_bytes=1 << 20)
    with pytest.raises(SpoolClosed):
        await log.append("tap.a.b", b"{}", "x")
    await log.open()
    await log.close()
    with pytest.raises(SpoolClosed):
        await log.append("tap.a.b", b"{}", "x")


async def test_draining_while_appending_reads_every_record_once_in_order(tmp_path: Path) -> None:
    log = await _open(tmp_path, segment_bytes=8192)
    total = 3000
    appended = asyncio.Event()

    async def appender() -> None:
        for start in range(0, total, 25):  # bursts: batches of several records
            await asyncio.gather(
                *(
                    log.append("tap.a.b", b"v" * (i % 700), f"id-{i}")
                    for i in range(start, start + 25)
                )
            )
        appended.set()

    async def drainer() -> list[str]:
        seen: list[str] = []
        while not appended.is_set() or log.depth_events:
            records = await log.read_batch(37)
            if not records:
                await asyncio.sleep(0)  # caught up: the spool is empty for a moment
                continue
            await log.commit(records)  # often drains the active segment: it is deleted
            seen += [r.msg_id for r in records]
        return seen

    _, seen = await asyncio.gather(appender(), drainer())
    assert seen == [f"id-{i}" for i in range(total)]
    assert log.depth_events == 0
    assert log.disk_bytes == sum(os.path.getsize(tmp_path / name) for name in _segments(tmp_path))
    await log.close()
