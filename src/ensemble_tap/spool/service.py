"""The spools of one process, as the app runs them: its own directory (``<spool>/<index>``:
0 for the primary, N for worker N), drained once the broker answers; the primary also drains
the directories of workers that no longer exist (``server.workers`` lowered), so no spooled
event is stranded. Refused events go to the dead-letter stream.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import orjson

from ensemble_tap.bus.contract import Publisher, PublishError
from ensemble_tap.bus.dlq import DeadLetter, DeadLetterWriter
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.providers.common import digest
from ensemble_tap.spool import spool_dir
from ensemble_tap.spool.drainer import Drainer
from ensemble_tap.spool.log import SpoolLog
from ensemble_tap.spool.record import SpooledRecord

log = get_logger("ensemble_tap.spool")


class ProcessSpool:
    """``log`` takes this process's events; ``start()`` drains it (and leftovers)."""

    def __init__(
        self,
        config: Config,
        index: int,
        publisher: Publisher,
        dlq: DeadLetterWriter,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.root = spool_dir(config)
        self.index = index
        self.publisher = publisher
        self.dlq = dlq
        self.metrics = metrics
        self.log = self._log(self.root / str(index), metrics)
        self._logs: list[SpoolLog] = [self.log]
        self._drainers: list[Drainer] = []

    def _log(self, directory: Path, metrics: Metrics | None) -> SpoolLog:
        return SpoolLog(directory, max_bytes=self.config.server.spool.max_bytes, metrics=metrics)

    async def open(self) -> None:
        """Open (and recover) this process's spool and, in the primary, every directory of
        a worker index past ``server.workers``."""
        await self.log.open()
        if self.index != 0 or not self.root.is_dir():
            return
        for directory in sorted(self.root.iterdir()):
            if directory.name.isdigit() and int(directory.name) >= self.config.server.workers:
                # Its gauges would overwrite this process's: the drainer still counts it.
                leftover = self._log(directory, None)
                await leftover.open()
                if leftover.depth_events:
                    log.info("draining a former worker's spool", directory=str(directory),
                             events=leftover.depth_events)  # fmt: skip
                self._logs.append(leftover)

    def start(self) -> None:
        """Drain from now on (the broker is reached and the streams exist)."""
        for spool in self._logs:
            drainer = Drainer(
                spool,
                self.publisher,
                on_rejected=self._dead_letter,
                metrics=self.metrics,
                publish_timeout=self.config.nats.publish_timeout,
            )
            drainer.start()
            self._drainers.append(drainer)

    def wake(self) -> None:
        """The broker connection is back: stop backing off."""
        for drainer in self._drainers:
            drainer.wake()

    def state(self) -> str:
        """For ``/readyz``: whether the spool can take events ("" when it cannot)."""
        room = self.log.max_bytes - self.log.disk_bytes
        if room < self.config.server.max_body_size * 4:
            return ""
        return f"accepting events while nats is unavailable ({self.log.depth_events} spooled)"

    async def close(self) -> None:
        for drainer in self._drainers:
            await drainer.stop()
        for spool in self._logs:
            with contextlib.suppress(Exception):
                await spool.close()

    async def _dead_letter(self, record: SpooledRecord, error: PublishError) -> bool:
        """A spooled event the broker refuses for good; too large ones keep their digest."""
        provider, tenant = _origin(record.payload)
        return await self.dlq.write(
            DeadLetter(
                stage="publish",
                provider=provider,
                reason=f"spooled event refused: {error}",
                tenant_id=tenant,
                request_id=record.request_id,
                original_subject=record.subject,
                original_dedup_id=record.msg_id,
                original_payload=b"" if error.too_large else record.payload,
                payload_sha256=digest(record.payload) if error.too_large else "",
            )
        )


def _origin(payload: bytes) -> tuple[str, str]:
    """Provider and tenant of a spooled CloudEvent (``data.provider``, ``data.tenant_id``)."""
    try:
        data = orjson.loads(payload).get("data") or {}
        return str(data.get("provider") or "unknown"), str(data.get("tenant_id") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown", ""
