"""The whole consume → batch → insert → ack path: real nats-server, chdb (the real engine)."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from ensemble_tap.sink import ClickHouseSink
from ensemble_tap.sink.jetstream import ConsumerRefused
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.sink import harness, sink_config
from tests.support.waiting import eventually

TABLE = "`ensemble`.`tap_events`"


async def count(sink: ClickHouseSink, final: bool = True, where: str = "") -> int:
    sql = f"SELECT count() AS n FROM {TABLE}{' FINAL' if final else ''} {where}"
    return int((await sink.backend.query(sql))[0]["n"])


async def test_every_event_lands_once_and_is_acked(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    config = sink_config(private_nats.url, tmp_path, batch_size=100)
    async with harness(config) as tap:
        await tap.publish(range(250))
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(lambda: sink.status_info.rows_inserted == 250)
            await eventually(tap.settled)
            assert await count(sink, final=False) == 250
            assert await count(sink) == 250
            assert sink.status()["state"] == "running"
        finally:
            await sink.stop()
        assert tap.metric("tap_clickhouse_rows_inserted_total") == 250
        assert tap.metric("tap_clickhouse_batch_size_rows_count") >= 3
        assert tap.metric("tap_clickhouse_flush_duration_seconds_count") >= 3
        assert tap.metric("tap_clickhouse_consumer_lag_seconds") > 0
        assert tap.metric("tap_clickhouse_insert_failures_total") == 0
        assert tap.metric("tap_events_publish_failures_total", provider="clickhouse") == 0


async def test_redelivered_and_republished_events_land_once(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    """Every message is delivered twice (the consumer is reset after a first run) and each
    event was also published twice (as after the NATS dedup window): still one row each."""
    config = sink_config(private_nats.url, tmp_path, batch_size=500)
    async with harness(config) as tap:
        await tap.publish(range(40))
        for index in range(40):  # a re-publication: another Nats-Msg-Id, the same event
            from tests.support.sink import envelope

            subject, body, msg_id = envelope(index)
            await tap.publish_raw(subject, body, msg_id + ":again")
        first = tap.sink()
        await first.start()
        await eventually(tap.settled)
        await first.stop()
        await tap.broker.js.delete_consumer(config.nats.stream, config.clickhouse.consumer_name)
        second = tap.sink()
        await second.start()
        try:
            await eventually(tap.settled)
            assert await count(second) == 40
            await second.backend.execute(f"OPTIMIZE TABLE {TABLE} FINAL")
            assert await count(second, final=False) == 40
        finally:
            await second.stop()
        assert tap.metric("tap_clickhouse_dedup_skipped_total") >= 40  # in-batch copies


async def test_poison_goes_to_the_dlq_without_blocking_its_batch(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    config = sink_config(private_nats.url, tmp_path, batch_size=1000, flush_interval="1s")
    async with harness(config) as tap:
        await tap.publish(range(10))
        await tap.publish_raw("ensemble.tap.acme.deal.updated", b"not json", "poison-1")
        bad_data = orjson.dumps(
            {
                "specversion": "1.0",
                "id": "bad",
                "data": {
                    "provider": "acme",
                    "tenant_id": "t1",
                    "request_id": "req-bad",
                    "snapshot": 7,
                },
            }
        )
        await tap.publish_raw("ensemble.tap.acme.deal.updated", bad_data, "poison-2")
        await tap.publish(range(10, 20))
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(tap.settled)
            assert await count(sink) == 20
        finally:
            await sink.stop()
        records = [
            message.json()
            for message in await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ")
        ]
        assert [(r["stage"], r["provider"], r["reason"]) for r in records] == [
            ("sink", "unknown", "json: not JSON"),
            ("sink", "acme", "data: data.snapshot must be an object"),
        ]
        assert base64.b64decode(records[0]["original_payload"]) == b"not json"
        assert records[0]["original_dedup_id"] == "poison-1"
        assert records[0]["original_subject"] == "ensemble.tap.acme.deal.updated"
        assert records[1]["tenant_id"] == "t1" and records[1]["request_id"] == "req-bad"
        assert tap.metric("tap_clickhouse_poison_total", reason="json") == 1
        assert tap.metric("tap_clickhouse_poison_total", reason="data") == 1
        assert tap.metric("tap_dlq_records_total", stage="sink") == 2
        info = await tap.consumer()
        assert info["num_redelivered"] == 0  # terminated, not redelivered


async def test_last_batch_is_stored_on_stop(private_nats: NatsServer, tmp_path: Path) -> None:
    """Neither full nor old enough when the sink stops: inserted then, not NAKed (W-CH-6)."""
    config = sink_config(
        private_nats.url,
        tmp_path,
        batch_size=1000,
        flush_interval="30s",
        consumer_ack_wait="60s",
    )
    async with harness(config) as tap:
        await tap.publish(range(15))
        sink = tap.sink()
        await sink.start()

        async def all_buffered() -> bool:
            info = await tap.consumer()
            return bool(info["num_pending"] == 0 and info["num_ack_pending"] == 15)

        await eventually(all_buffered)
        assert sink.status_info.rows_inserted == 0
        await sink.stop()
        assert sink.status_info.rows_inserted == 15
        assert await tap.settled()


async def test_consumer_is_updated_when_the_config_changed(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    """The reference refused to start after such a change until the consumer was deleted."""
    async with harness(sink_config(private_nats.url, tmp_path)) as tap:
        old = sink_config(
            private_nats.url,
            tmp_path,
            consumer_ack_wait="20s",
            consumer_max_ack_pending=2000,
            consumer_max_waiting=16,
        )
        async with harness(old) as previous:
            sink = previous.sink()
            await sink.start()
            await sink.stop()
        sink = tap.sink()
        await sink.start()
        await sink.stop()
        config = (await tap.consumer())["config"]
        assert config["ack_wait"] == 10_000_000_000
        assert config["max_ack_pending"] == 1000
        assert config["max_waiting"] == 16  # JetStream cannot change it; a warning says so


async def test_consumer_reads_the_whole_stream_without_a_filter(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    """The stream's only subject is the filter: the consumer goes without one (the server
    then skips a subject match per message), and a consumer made with the filter by an
    earlier version loses it; every event still lands once."""
    config = sink_config(private_nats.url, tmp_path)
    async with harness(config) as tap:
        await tap.broker.js.add_consumer(
            config.nats.stream,
            durable_name=config.clickhouse.consumer_name,
            filter_subject="ensemble.tap.>",
            ack_policy="explicit",
        )
        await tap.publish(range(20))
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(lambda: sink.status_info.rows_inserted == 20)
            assert await count(sink) == 20
        finally:
            await sink.stop()
        assert not (await tap.consumer())["config"].get("filter_subject")
        assert await tap.settled()


async def test_consumer_keeps_its_filter_when_the_stream_holds_more(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    config = sink_config(private_nats.url, tmp_path)
    async with harness(config) as tap:
        stream = await tap.broker.js.stream_info(config.nats.stream)
        assert stream.config.subjects is not None
        stream.config.subjects.append("elsewhere.>")
        await tap.broker.js.update_stream(stream.config)
        await tap.broker.js.publish("elsewhere.x", b"not for the sink")
        await tap.publish(range(3))
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(lambda: sink.status_info.rows_inserted == 3)
            assert await count(sink) == 3
        finally:
            await sink.stop()
        consumer = await tap.consumer()
        assert consumer["config"]["filter_subject"] == "ensemble.tap.>"
        assert consumer["num_pending"] == 0 and consumer["num_ack_pending"] == 0
        assert tap.metric("tap_clickhouse_poison_total", reason="json") == 0


async def test_push_consumer_of_the_same_name_is_refused(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    config = sink_config(private_nats.url, tmp_path)
    async with harness(config) as tap:
        await tap.broker.js.add_consumer(
            config.nats.stream,
            durable_name=config.clickhouse.consumer_name,
            deliver_subject="push.here",
        )
        sink = tap.sink()
        with pytest.raises(ConsumerRefused, match="is a push consumer"):  # final: not retried
            await sink.start()
        await sink.stop()


async def test_a_sink_that_never_started_stops_cleanly(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    """Stopping during start-up (the consumer not set up yet) used to raise nats-py's
    "Client.connect must be called first", which hid the real reason of the exit."""
    config = sink_config(private_nats.url, tmp_path)
    async with harness(config) as tap:
        await tap.sink().stop()


async def test_deleted_consumer_is_recreated(private_nats: NatsServer, tmp_path: Path) -> None:
    config = sink_config(private_nats.url, tmp_path)
    async with harness(config) as tap:
        sink = tap.sink()
        await sink.start()
        try:
            await tap.publish(range(5))
            await eventually(lambda: sink.status_info.rows_inserted == 5)
            await tap.broker.js.delete_consumer(config.nats.stream, config.clickhouse.consumer_name)
            await tap.publish(range(5, 10))
            # The new consumer starts at the oldest message: the first five come again and
            # collapse with their rows.
            await eventually(lambda: sink.status_info.rows_inserted >= 15)
            assert await count(sink) == 10
            await eventually(lambda: sink.status_info.state == "running")
        finally:
            await sink.stop()
        assert tap.metric("tap_clickhouse_fetch_errors_total") >= 1


async def test_status_and_readiness_detail(private_nats: NatsServer, tmp_path: Path) -> None:
    config = sink_config(private_nats.url, tmp_path)
    async with harness(config) as tap:
        sink = tap.sink()
        assert await sink.readiness_detail() == {"clickhouse": "starting"}
        await sink.start()
        try:
            await eventually(lambda: sink.status_info.state == "running")
            assert await sink.ready() == (True, "ok")
            assert sink.status()["backend"] == f"embedded chdb at {tmp_path.resolve()}/clickhouse"
        finally:
            await sink.stop()
        assert await sink.readiness_detail() == {"clickhouse": "stopped"}
        assert tap.metric("tap_clickhouse_sink_healthy") == 0
