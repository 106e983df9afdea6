"""Run only the ClickHouse sink in a process of its own (for the crash tests).

``python -m tests.support.sink_process SETTINGS_JSON`` (``{"nats_url", "data_dir",
"clickhouse"}``, as for ``tests.support.sink.sink_config``) starts the sink and runs until
SIGTERM (a clean stop) or SIGKILL (a crash).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.publisher import Publisher
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics, configure_logging
from ensemble_tap.sink import ClickHouseSink
from tests.support.sink import sink_config


async def main(config: Config) -> None:
    assert config.nats.url is not None
    metrics = Metrics()
    broker = Broker(config.nats, [config.nats.url], metrics)
    await broker.connect()
    dlq = DeadLetterWriter(Publisher(broker, config.nats, metrics), metrics)
    sink = ClickHouseSink(config, broker, dlq, metrics)
    await sink.start()
    print("sink started", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await sink.stop()
    await broker.close()
    print("sink stopped", flush=True)


if __name__ == "__main__":
    settings = json.loads(Path(sys.argv[1]).read_text())
    configure_logging("info")
    asyncio.run(
        main(
            sink_config(settings["nats_url"], Path(settings["data_dir"]), **settings["clickhouse"])
        )
    )
