"""JetStream stream provisioning: create, or update when the stream already exists."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StoreCompression,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from ensemble_tap.bus.provisioning import SetupRefused, not_yet
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import get_logger

DLQ_SUBJECTS = "ensemble.dlq.>"
DLQ_MAX_AGE = 14 * 86400.0
DLQ_DUPLICATE_WINDOW = 600.0
STREAM_NAME_EXISTS = 10058  # "already in use with a different configuration"
log = get_logger("ensemble_tap.bus")


class StreamSetupError(SetupRefused):
    """nats-server refused the stream's configuration."""


class StreamNotYet(RuntimeError):
    """JetStream cannot create or update the stream now (no meta leader or quorum yet, a
    peer missing for placement): retried by the caller."""


def main_stream_config(cfg: NatsConfig) -> StreamConfig:
    fields: dict[str, Any] = {
        "name": cfg.stream,
        "subjects": [f"{cfg.subject_prefix}.>"],
        "retention": RetentionPolicy.LIMITS,
        "discard": DiscardPolicy.NEW if cfg.stream_discard == "new" else DiscardPolicy.OLD,
        "storage": StorageType.MEMORY if cfg.stream_storage == "memory" else StorageType.FILE,
        "max_age": cfg.max_age,
        "duplicate_window": cfg.dedup_window,
        "num_replicas": cfg.stream_replicas,
        "compression": StoreCompression.S2
        if cfg.stream_compression == "s2"
        else StoreCompression.NONE,
        "allow_msg_ttl": cfg.stream_allow_msg_ttl or None,
        "max_consumers": cfg.stream_max_consumers or -1,
        "max_msgs_per_subject": cfg.stream_max_msgs_per_subject or -1,
        "max_msgs": cfg.stream_max_msgs or -1,
        "max_bytes": cfg.stream_max_bytes or -1,
        "max_msg_size": cfg.stream_max_msg_size or -1,
    }
    return StreamConfig(**fields)


def dlq_stream_config(cfg: NatsConfig) -> StreamConfig:
    return StreamConfig(
        name=dlq_stream_name(cfg),
        subjects=[DLQ_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        max_age=DLQ_MAX_AGE,
        duplicate_window=DLQ_DUPLICATE_WINDOW,
        num_replicas=cfg.stream_replicas,
    )


def dlq_stream_name(cfg: NatsConfig) -> str:
    return f"{cfg.stream}_DLQ"


def replay_jobs_bucket(cfg: NatsConfig) -> str:
    """The KV bucket of replay jobs (``server.admin_replay_store_backend: nats``)."""
    return f"{cfg.stream}_REPLAY_JOBS"


def console_sessions_bucket(cfg: NatsConfig) -> str:
    """The KV bucket of console sessions, shared like the replay jobs."""
    return f"{cfg.stream}_CONSOLE_SESSIONS"


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it to ``config`` if it exists (idempotent, also when
    replicas do it at the same moment). Raises ``StreamSetupError`` when the configuration is
    refused, ``StreamNotYet`` (or nats-py's timeout / no-responders errors) when JetStream
    cannot answer yet."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except APIError as exc:
            if exc.err_code != STREAM_NAME_EXISTS:  # else a sibling was first: update it
                raise _classified(f"add stream {config.name}", exc) from exc
        else:
            log.info("stream created", stream=config.name, subjects=config.subjects)
            return
    try:
        await js.update_stream(config)
    except APIError as exc:
        raise _classified(f"update stream {config.name}", exc) from exc


def _classified(action: str, exc: APIError) -> StreamSetupError | StreamNotYet:
    message = f"{action}: {exc.description}"
    return StreamNotYet(message) if not_yet(exc.code, exc.err_code) else StreamSetupError(message)
