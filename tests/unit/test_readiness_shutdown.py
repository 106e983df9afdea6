"""``/readyz`` after SIGTERM: 503 at once, not after the readiness cache's second."""

from __future__ import annotations

from ensemble_tap.bus.connection import Broker
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.health import Readiness
from ensemble_tap.observability import Metrics


async def test_shutting_down_answers_at_once_whatever_was_cached() -> None:
    readiness = Readiness(Broker(NatsConfig(), [], Metrics()), ("S",))
    assert (await readiness.check())[1] == {"nats": "nats connection not healthy"}  # cached
    readiness.shutting_down = True
    ready, checks = await readiness.check()
    assert not ready
    assert checks == {"shutdown": "shutting down: finishing requests, routed elsewhere"}
