"""Count JetStream advisories about this service's streams by kind."""

from __future__ import annotations

from nats.aio.msg import Msg

from ensemble_tap.bus.connection import Broker
from ensemble_tap.observability import Metrics

ADVISORY_SUBJECT = "$JS.EVENT.ADVISORY.>"


def advisory_kind(subject: str) -> str:
    """``$JS.EVENT.ADVISORY.CONSUMER.CREATED.S.C`` → ``consumer.created``; the per-request API
    audit (``$JS.EVENT.ADVISORY.API``) → ``api``; anything shorter → ``unknown``."""
    tokens = subject.split(".")
    if len(tokens) == 4 and tokens[3].strip().upper() == "API":
        return "api"
    if len(tokens) < 5 or not tokens[3].strip():
        return "unknown"
    kind = tokens[3].strip().lower()
    if tokens[4].strip():
        kind += "." + tokens[4].strip().lower()
    return kind


def concerns_streams(subject: str, streams: frozenset[str]) -> bool:
    """Stream and consumer advisories name their stream in token 5; keep only ours."""
    tokens = subject.split(".")
    if len(tokens) >= 6 and tokens[3] in ("STREAM", "CONSUMER"):
        return tokens[5] in streams
    return True


async def subscribe_advisories(broker: Broker, streams: frozenset[str], metrics: Metrics) -> None:
    async def on_advisory(msg: Msg) -> None:
        if concerns_streams(msg.subject, streams):
            metrics.advisories.labels(advisory_kind(msg.subject)).inc()

    await broker.nc.subscribe(ADVISORY_SUBJECT, cb=on_advisory)
