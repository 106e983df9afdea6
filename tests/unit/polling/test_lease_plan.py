"""How a replica evens the poll targets out (poller/leases.py ``plan``): never above its
fair share, idle replicas get targets, one hand-back a round, only by the replica holding
most."""

from __future__ import annotations

from ensemble_tap.poller.leases import Plan, plan
from ensemble_tap.state.leases import Lease, LeaseView

TARGETS = [f"t{n}" for n in range(7)]


def view(replicas: set[str], **holders: str) -> LeaseView:
    return LeaseView(
        {t: Lease(t, holder, None, 1) for t, holder in holders.items()}, frozenset(replicas)
    )


def test_alone_a_replica_takes_every_target() -> None:
    step = plan(targets=TARGETS, view=view(set()), me="a", mine=())
    assert sorted(step.take) == TARGETS and step.give_back == ()


def test_a_replica_takes_no_more_than_its_share() -> None:
    step = plan(targets=TARGETS, view=view({"a", "b", "c"}), me="a", mine=())
    assert len(step.take) == 3  # ceil(7 / 3)
    assert set(step.take) <= set(TARGETS)


def test_free_targets_are_tried_in_an_order_of_each_replica() -> None:
    first = plan(targets=TARGETS, view=view({"a", "b"}), me="a", mine=()).take
    second = plan(targets=TARGETS, view=view({"a", "b"}), me="b", mine=()).take
    assert first != second


def test_held_targets_are_never_taken() -> None:
    step = plan(targets=TARGETS, view=view({"a", "b"}, t0="b", t1="b"), me="a", mine=())
    assert not {"t0", "t1"} & set(step.take)


def test_above_the_share_the_surplus_is_given_back() -> None:
    mine = TARGETS  # took everything while alone
    step = plan(targets=TARGETS, view=view({"a", "b", "c"}), me="a", mine=mine)
    assert step.take == () and len(step.give_back) == 4  # keeps ceil(7 / 3) = 3


def test_an_idle_replica_gets_a_target_below_the_ceiling() -> None:
    # 4 targets, 3 replicas: a and b hold 2 each (the ceiling), c holds none.
    targets = TARGETS[:4]
    holders = {"t0": "a", "t1": "a", "t2": "b", "t3": "b"}
    seen = view({"a", "b", "c"}, **holders)
    assert plan(targets=targets, view=seen, me="b", mine=("t2", "t3")).give_back == ("t3",)
    # Only the greatest id of those holding most gives back.
    assert plan(targets=targets, view=seen, me="a", mine=("t0", "t1")) == Plan()
    # Once one is free, the replicas at the floor leave it to the idle one.
    seen = view({"a", "b", "c"}, t0="a", t1="a", t2="b")
    assert plan(targets=targets, view=seen, me="b", mine=("t2",)).take == ()
    assert plan(targets=targets, view=seen, me="c", mine=()).take == ("t3",)


def test_leases_of_a_dead_replica_are_not_free() -> None:
    step = plan(targets=TARGETS[:2], view=view({"a"}, t0="dead"), me="a", mine=())
    assert step.take == ("t1",)
