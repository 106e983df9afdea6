"""The fault harness's own arithmetic: a report finds what was lost or stored twice."""

from __future__ import annotations

import collections

from tests.faults.harness import Fault, Stored, make_deliveries, report


def test_lost_duplicated_and_recovery_are_counted_from_the_stores() -> None:
    deliveries = make_deliveries(4, "unit")
    for offset, delivery in enumerate(deliveries[:3]):  # the fourth is never accepted
        delivery.first_attempt = 1.0 + offset
        delivery.accepted_at = 2.0 + offset
        delivery.attempts = 2
        delivery.outcomes = ["503"]
    ids = [d.event_id for d in deliveries]
    stores = {
        "jetstream": Stored(collections.Counter({ids[0]: 1, ids[1]: 2, ids[2]: 1})),
        "clickhouse": Stored(collections.Counter({ids[0]: 1, ids[1]: 1}), unmerged_rows=3),
    }
    result = report("unit", deliveries, stores, Fault(started=1.5, ended=2.5))
    # ids[2] is missing from ClickHouse, ids[3] was never accepted; ids[1] stored twice.
    assert (result.lost, result.duplicated) == (2, 1)
    assert result.lost_ids == (ids[2], ids[3])
    assert result.duplicated_ids == (ids[1],)
    assert result.recovery_seconds == 0.5  # ids[1]'s 2xx at 3.0, the first after 2.5
    assert result.accepted == 3
    assert result.affected == 2  # ids[0] and ids[1]: tried by 2.5, accepted after 1.5
    assert result.outcomes == (("503", 3),)
    assert result.unmerged_rows == 3
    assert "lost 2, duplicated 1" in result.summary()


def test_deliveries_are_unique_and_identical_on_every_retry() -> None:
    first, second = make_deliveries(2, "unit"), make_deliveries(2, "unit")
    assert [d.body for d in first] == [d.body for d in second]  # same bytes when re-sent
    assert len({d.event_id for d in first}) == len({d.body for d in first}) == 2
    assert first[0].headers["X-Event-Id"] == first[0].event_id
