"""The NATS layer against a real server: provisioning, publish policy, advisories."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamInfo
from nats.js.errors import NotFoundError

from ensemble_tap.bus.advisories import advisory_kind, concerns_streams, subscribe_advisories
from ensemble_tap.bus.connection import Broker, BrokerConnectError
from ensemble_tap.bus.contract import Failure, PublishError
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import StreamSetupError, ensure_stream, main_stream_config
from ensemble_tap.observability import Metrics
from tests.support.configs import unique_nats
from tests.support.nats_server import NatsServer


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    broker = Broker(unique_nats(), [nats_server.url], Metrics())
    await broker.connect()
    yield broker
    await broker.close()


async def test_stream_is_created_from_every_stream_key_and_updated_in_place(
    broker: Broker,
) -> None:
    cfg = unique_nats(
        stream_storage="memory",
        stream_discard="new",
        stream_max_msgs=10,
        stream_max_bytes=100_000,
        stream_max_msg_size=2048,
        stream_max_msgs_per_subject=5,
        stream_max_consumers=3,
        max_age="1h",
        dedup_window="30s",
    )
    await ensure_stream(broker.js, main_stream_config(cfg))
    await ensure_stream(broker.js, main_stream_config(cfg))  # idempotent
    info = await broker.js.stream_info(cfg.stream)
    assert info.config.subjects == [f"{cfg.subject_prefix}.>"]
    assert info.config.storage == StorageType.MEMORY
    assert info.config.discard == DiscardPolicy.NEW
    assert (info.config.max_msgs, info.config.max_bytes) == (10, 100_000)
    assert info.config.max_msg_size == 2048
    assert info.config.max_msgs_per_subject == 5
    assert info.config.max_consumers == 3
    assert info.config.max_age == 3600
    assert info.config.duplicate_window == 30

    changed = cfg.model_copy(update={"max_age": 7200.0, "stream_max_msgs": 20})
    await ensure_stream(broker.js, main_stream_config(changed))
    info = await broker.js.stream_info(cfg.stream)
    assert (info.config.max_age, info.config.max_msgs) == (7200, 20)


async def test_a_refused_update_is_a_clear_error(broker: Broker) -> None:
    cfg = unique_nats()
    await ensure_stream(broker.js, main_stream_config(cfg))
    with pytest.raises(StreamSetupError, match="update stream"):
        await ensure_stream(
            broker.js, main_stream_config(cfg.model_copy(update={"stream_storage": "memory"}))
        )


async def test_a_stream_a_sibling_created_differently_is_updated(broker: Broker) -> None:
    """Replicas in a rolling config change: the add loses the race to a sibling's stream of
    another config ("already in use"), and the stream is updated instead."""
    cfg = unique_nats()
    sibling = main_stream_config(cfg.model_copy(update={"stream_max_msgs": 5}))
    mine = main_stream_config(cfg)
    info_first = broker.js.stream_info

    async def created_meanwhile(name: str, *args: Any, **kwargs: Any) -> StreamInfo:
        """The sibling's add lands between our stream info and our add."""
        try:
            return await info_first(name, *args, **kwargs)
        except NotFoundError:
            await broker.nc.jetstream().add_stream(sibling)
            raise

    js = broker.js
    js.stream_info = created_meanwhile  # type: ignore[method-assign]
    await ensure_stream(js, mine)
    assert (await broker.js.stream_info(cfg.stream)).config.max_msgs == -1  # ours, unlimited


async def test_a_replicated_stream_on_one_server_is_refused_for_good(broker: Broker) -> None:
    """A config error (replicas > 1 on a server that is not clustered) is final; "no peers
    for placement", a 503 or a timeout would be retried (tests/cluster)."""
    cfg = unique_nats(stream_replicas=3)
    with pytest.raises(StreamSetupError, match="replicas > 1 not supported"):
        await ensure_stream(broker.js, main_stream_config(cfg))


async def test_publish_dedups_within_the_window(broker: Broker) -> None:
    cfg = unique_nats()
    await ensure_stream(broker.js, main_stream_config(cfg))
    publisher = JetStreamPublisher(broker, cfg, broker.metrics)
    subject = f"{cfg.subject_prefix}.stripe.invoice.paid"
    first = await publisher.publish(subject, b"{}", "dup_123", "req-1")
    second = await publisher.publish(subject, b"{}", "dup_123", "req-1")
    assert (first.duplicate, second.duplicate) == (False, True)
    assert (await broker.js.stream_info(cfg.stream)).state.messages == 1
    message = await broker.js.get_msg(cfg.stream, first.sequence)
    assert message.headers == {"Nats-Msg-Id": "dup_123", "X-Request-ID": "req-1"}


async def test_no_stream_for_the_subject_is_retried_then_unavailable(broker: Broker) -> None:
    cfg = unique_nats(publish_timeout="1s", publish_retry_backoff="50ms")
    publisher = JetStreamPublisher(broker, cfg, broker.metrics)
    with pytest.raises(PublishError) as failure:
        await publisher.publish("nowhere.at.all", b"{}", "id-1")
    assert failure.value.failure is Failure.UNAVAILABLE
    retries = broker.metrics.registry.get_sample_value(
        "tap_nats_publish_retries_total", {"reason": "transport"}
    )
    assert retries is not None and retries >= 1


async def test_a_message_over_the_size_limit_is_not_retried(broker: Broker) -> None:
    cfg = unique_nats(stream_max_msg_size=16)
    await ensure_stream(broker.js, main_stream_config(cfg))
    publisher = JetStreamPublisher(broker, cfg, broker.metrics)
    with pytest.raises(PublishError, match="message size exceeds maximum") as failure:
        await publisher.publish(f"{cfg.subject_prefix}.a.b.c", b"x" * 64, "big")
    assert failure.value.failure is Failure.PERMANENT
    assert broker.metrics.registry.get_sample_value(
        "tap_nats_publish_retries_total", {"reason": "api_4xx"}
    ) in (None, 0.0)


async def test_a_full_stream_with_discard_new_is_not_retried(broker: Broker) -> None:
    cfg = unique_nats(stream_max_msgs=1, stream_discard="new")
    await ensure_stream(broker.js, main_stream_config(cfg))
    publisher = JetStreamPublisher(broker, cfg, broker.metrics)
    await publisher.publish(f"{cfg.subject_prefix}.a.b.c", b"1", "one")
    with pytest.raises(PublishError, match="maximum messages exceeded") as failure:
        await publisher.publish(f"{cfg.subject_prefix}.a.b.c", b"2", "two")
    assert failure.value.failure is Failure.PERMANENT
    assert broker.metrics.registry.get_sample_value(
        "tap_nats_publish_retries_total", {"reason": "api_5xx"}
    ) in (None, 0.0)


async def test_publish_waits_for_a_reconnect_within_its_budget(private_nats: NatsServer) -> None:
    cfg = unique_nats(reconnect_wait="100ms", publish_timeout="5s")
    broker = Broker(cfg, [private_nats.url], Metrics())
    await broker.connect()
    try:
        await ensure_stream(broker.js, main_stream_config(cfg))
        private_nats.stop()
        for _ in range(100):
            if not broker.is_connected:
                break
            await asyncio.sleep(0.02)
        assert broker.metrics.registry.get_sample_value("tap_nats_connected") == 0
        publish = asyncio.create_task(
            JetStreamPublisher(broker, cfg, broker.metrics).publish(
                f"{cfg.subject_prefix}.a.b.c", b"{}", "during-outage"
            )
        )
        await asyncio.sleep(0.3)
        private_nats.start()
        result = await publish
        assert result.sequence == 1
        assert broker.metrics.registry.get_sample_value("tap_nats_connected") == 1
    finally:
        await broker.close()


async def test_connect_gives_up_after_the_startup_timeout() -> None:
    from ensemble_tap.bus.embedded import free_port

    cfg = unique_nats(startup_timeout="500ms", reconnect_wait="100ms", connect_timeout="200ms")
    broker = Broker(cfg, [f"nats://127.0.0.1:{free_port()}"], Metrics())
    with pytest.raises(BrokerConnectError, match="not reachable"):
        await broker.connect(cfg.startup_timeout)


async def test_advisories_about_our_streams_are_counted(broker: Broker) -> None:
    cfg = unique_nats()
    await subscribe_advisories(broker, frozenset({cfg.stream}), broker.metrics)
    await ensure_stream(broker.js, main_stream_config(cfg))
    await broker.js.add_consumer(cfg.stream, durable_name="probe")
    for _ in range(100):
        value = broker.metrics.registry.get_sample_value(
            "tap_jetstream_advisories_total", {"kind": "consumer.created"}
        )
        if value:
            break
        await asyncio.sleep(0.02)
    assert value == 1


def test_advisory_kinds() -> None:
    assert advisory_kind("$JS.EVENT.ADVISORY.CONSUMER.CREATED.ENSEMBLE_TAP.c") == "consumer.created"
    assert advisory_kind("$JS.EVENT.ADVISORY.STREAM..ENSEMBLE_TAP") == "stream"
    assert advisory_kind("$JS.EVENT.ADVISORY.API") == "api"
    assert advisory_kind("invalid") == "unknown"
    ours = frozenset({"ENSEMBLE_TAP"})
    assert concerns_streams("$JS.EVENT.ADVISORY.STREAM.CREATED.ENSEMBLE_TAP", ours)
    assert not concerns_streams("$JS.EVENT.ADVISORY.STREAM.CREATED.OTHER", ours)
    assert concerns_streams("$JS.EVENT.ADVISORY.API", ours)


async def test_a_publish_the_server_would_answer_by_closing_the_connection_is_refused(
    broker: Broker,
) -> None:
    """A control line past nats-server's limit or a message past max_payload (headers
    count) makes the server close the connection, failing every other publish on it: such
    a publish is refused before it is sent, as a permanent failure."""
    cfg = unique_nats()
    await ensure_stream(broker.js, main_stream_config(cfg))
    publisher = JetStreamPublisher(broker, cfg, broker.metrics)
    with pytest.raises(PublishError, match="subject of 5017 bytes is too long") as long_subject:
        await publisher.publish(f"{cfg.subject_prefix}.{'s' * 5000}", b"{}", "long-subject")
    assert long_subject.value.failure is Failure.PERMANENT
    payload = b"p" * (broker.nc.max_payload - 10)  # fits alone; not with its headers
    with pytest.raises(PublishError, match="exceed the server's max_payload") as too_large:
        await publisher.publish(f"{cfg.subject_prefix}.a.b.c", payload, "m" * 40)
    assert too_large.value.failure is Failure.TOO_LARGE
    result = await publisher.publish(f"{cfg.subject_prefix}.a.b.c", b"{}", "after")
    assert result.sequence == 1
    assert broker.is_connected
