"""A sink killed mid-batch (SIGKILL) and restarted loses nothing and duplicates nothing."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.nats_server import NatsServer
from tests.support.sink import eventually, harness, open_chdb, sink_config

EVENTS = 20_000  # enough that the kill lands while the first process is busy
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def sink_process(config_file: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.sink_process", str(config_file)],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


async def test_killed_mid_batch_and_restarted(private_nats: NatsServer, tmp_path: Path) -> None:
    settings = {
        "batch_size": 200,
        "consumer_fetch_batch_size": 200,
        "flush_interval": "50ms",
        "consumer_ack_wait": "2s",  # the killed process's deliveries come back quickly
        "insert_timeout": "1s",
    }
    config = sink_config(private_nats.url, tmp_path / "data", **settings)
    config_file = tmp_path / "settings.json"
    config_file.write_text(
        json.dumps(
            {
                "nats_url": private_nats.url,
                "data_dir": str(tmp_path / "data"),
                "clickhouse": settings,
            }
        )
    )
    log = tmp_path / "sink.log"
    async with harness(config) as tap:
        await tap.publish(range(EVENTS))

        async def partly_stored() -> bool:
            info = await tap.consumer_if_any()  # None until the process created it
            return bool(info and info["ack_floor"]["stream_seq"] >= 2000)

        with sink_process(config_file, log) as first:
            await eventually(partly_stored)
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        killed_at = await tap.consumer()
        assert killed_at["num_pending"] + killed_at["num_ack_pending"] > 0, log.read_text()

        with sink_process(config_file, log) as second:
            await eventually(tap.settled, timeout=60)
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()

    with open_chdb(tmp_path / "data" / "clickhouse") as backend:
        table = "`ensemble`.`tap_events`"
        [final] = await backend.query(
            f"SELECT count() AS n, uniqExact(id) AS ids FROM {table} FINAL"
        )
        assert (int(final["n"]), int(final["ids"])) == (EVENTS, EVENTS)
        await backend.execute(f"OPTIMIZE TABLE {table} FINAL")
        [merged] = await backend.query(f"SELECT count() AS n FROM {table}")
        assert int(merged["n"]) == EVENTS
