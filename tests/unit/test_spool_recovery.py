"""Recovery at open and damage met while draining: a torn tail is truncated away, a damaged
record in the middle is skipped, good records are never lost and never read twice, every
damaged region is counted once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ensemble_tap.observability import Metrics
from ensemble_tap.spool import SpoolLog
from ensemble_tap.spool.files import CURSOR_NAME, write_cursor
from ensemble_tap.spool.record import HEADER, Position
from tests.support.spool import drain_all, read_all

IDS = [f"id-{i}" for i in range(10)]


async def _open(directory: Path, metrics: Metrics, segment_bytes: int = 1 << 20) -> SpoolLog:
    log = SpoolLog(directory, max_bytes=1 << 26, segment_bytes=segment_bytes, metrics=metrics)
    await log.open()
    return log


async def _spool(directory: Path, ids: list[str], segment_bytes: int = 1 << 20) -> list[int]:
    """Spool ``ids`` one append each; the offsets of their records."""
    log = await _open(directory, Metrics(), segment_bytes)
    for index, msg_id in enumerate(ids):
        await log.append(
            "tap.acme.thing.done", b'{"n":%d,"pad":"%s"}' % (index, b"p" * 200), msg_id
        )
    offsets = [r.position.offset for r in await read_all(log)]
    await log.close()
    return offsets


def _newest_segment(directory: Path) -> Path:
    return directory / max(name for name in os.listdir(directory) if name.endswith(".seg"))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _corrupt_count(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("tap_spool_corrupt_records_total")


def _truncate_mid_last(path: Path, last: int) -> None:
    os.truncate(path, last + 30)


def _append_garbage(path: Path, last: int) -> None:
    with open(path, "ab") as file:
        file.write(b"\xf5TSR" + os.urandom(500))  # even a magic: its CRC fails


def _zero_fill(path: Path, last: int) -> None:
    with open(path, "ab") as file:
        file.write(b"\0" * 4096)  # the size reached the disk, the data did not


def _flip_last_crc(path: Path, last: int) -> None:
    _flip(path, last + 5)


def _length_past_end(path: Path, last: int) -> None:
    data = bytearray(path.read_bytes())
    data[last + 8 : last + 12] = (1 << 20).to_bytes(4, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "kept"),
    [
        (_truncate_mid_last, IDS[:-1]),
        (_append_garbage, IDS),
        (_zero_fill, IDS),
        (_flip_last_crc, IDS[:-1]),
        (_length_past_end, IDS[:-1]),
    ],
)
async def test_a_torn_tail_is_truncated_counted_and_appends_follow_the_last_good_record(
    tmp_path: Path, damage: Callable[[Path, int], None], kept: list[str]
) -> None:
    offsets = await _spool(tmp_path, IDS)
    segment = _newest_segment(tmp_path)
    damage(segment, offsets[-1])
    metrics = Metrics()
    log = await _open(tmp_path, metrics)
    assert log.depth_events == len(kept)
    assert _corrupt_count(metrics) == 1
    end = offsets[len(kept)] if len(kept) < len(IDS) else offsets[-1] + (offsets[1] - offsets[0])
    assert segment.stat().st_size == end  # the torn bytes are gone from the file
    await log.append("tap.acme.thing.done", b"{}", "after")
    assert [r.msg_id for r in await drain_all(log)] == [*kept, "after"]
    await log.close()

    again = await _open(tmp_path, metrics)
    assert await read_all(again) == []
    assert _corrupt_count(metrics) == 1  # nothing left to find
    await again.close()


async def test_a_damaged_record_in_the_middle_is_skipped_and_later_ones_kept(
    tmp_path: Path,
) -> None:
    offsets = await _spool(tmp_path, IDS)
    _flip(_newest_segment(tmp_path), offsets[4] + HEADER.size + 40)  # inside record 4's body
    metrics = Metrics()
    log = await _open(tmp_path, metrics)
    assert log.depth_events == 9
    assert _corrupt_count(metrics) == 1
    drained = await drain_all(log)
    assert [r.msg_id for r in drained] == IDS[:4] + IDS[5:]
    assert _corrupt_count(metrics) == 1  # met again while draining: not counted twice
    await log.close()


async def test_damage_at_the_end_of_an_older_segment_skips_to_the_next(tmp_path: Path) -> None:
    await _spool(tmp_path, IDS, segment_bytes=700)  # three records a segment
    names = sorted(name for name in os.listdir(tmp_path) if name.endswith(".seg"))
    assert len(names) >= 3
    first = tmp_path / names[0]
    os.truncate(first, first.stat().st_size - 10)  # its third record cut short
    metrics = Metrics()
    log = await _open(tmp_path, metrics)
    assert _corrupt_count(metrics) == 1
    drained = [r.msg_id for r in await drain_all(log)]
    assert drained == IDS[:2] + IDS[3:]
    assert _corrupt_count(metrics) == 1
    await log.close()


async def test_damage_appearing_after_open_is_skipped_while_draining(tmp_path: Path) -> None:
    offsets = await _spool(tmp_path, IDS)
    metrics = Metrics()
    log = await _open(tmp_path, metrics)
    assert _corrupt_count(metrics) == 0
    _flip(_newest_segment(tmp_path), offsets[6] + 2)  # record 6's magic, after the check
    drained = await drain_all(log, batch=4)
    assert [r.msg_id for r in drained] == IDS[:6] + IDS[7:]
    assert _corrupt_count(metrics) == 1
    await log.close()


async def test_a_drain_then_a_torn_tail_replays_nothing_twice(tmp_path: Path) -> None:
    offsets = await _spool(tmp_path, IDS)
    metrics = Metrics()
    log = await _open(tmp_path, metrics)
    first = await log.read_batch(4)
    await log.commit(first)
    await log.close()
    _truncate_mid_last(_newest_segment(tmp_path), offsets[-1])

    log = await _open(tmp_path, metrics)
    rest = await drain_all(log)
    await log.close()
    assert [r.msg_id for r in first + rest] == IDS[:-1]


async def test_a_damaged_cursor_drains_again_from_the_oldest_record(tmp_path: Path) -> None:
    await _spool(tmp_path, IDS)
    metrics = Metrics()
    log = await _open(tmp_path, metrics)
    await log.commit(await log.read_batch(3))
    await log.close()
    (tmp_path / CURSOR_NAME).write_bytes(b"\xf5TSC garbage")

    log = await _open(tmp_path, metrics)
    # Nothing is lost; the three drained ones come again (JetStream's dedup drops them).
    assert [r.msg_id for r in await drain_all(log)] == IDS
    await log.close()


async def test_an_empty_or_missing_directory_opens_empty(tmp_path: Path) -> None:
    log = await _open(tmp_path / "new" / "spool", Metrics())
    assert log.depth_events == 0
    assert await log.read_batch() == []
    await log.close()


async def test_segments_drained_before_a_crash_cut_their_deletion_short_are_removed(
    tmp_path: Path,
) -> None:
    await _spool(tmp_path, IDS[:5], segment_bytes=700)
    names = sorted(name for name in os.listdir(tmp_path) if name.endswith(".seg"))
    newest = tmp_path / names[-1]
    # The cursor reached the newest segment's end, then the process died before deleting.
    write_cursor(tmp_path, Position(int(names[-1][:-4]), newest.stat().st_size), os.fsync)
    log = await _open(tmp_path, Metrics())
    assert log.depth_events == 0
    assert not any(name.endswith(".seg") for name in os.listdir(tmp_path))
    await log.append("tap.acme.thing.done", b"{}", "after")
    assert [r.msg_id for r in await drain_all(log)] == ["after"]
    await log.close()
