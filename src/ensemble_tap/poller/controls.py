"""Operators' controls of one poll target: run now, pause, resume, reset its checkpoints.

What each does (docs/operations.md, "Poller controls"):

* ``run``: the next cycle starts at once, whatever the interval, backoff or open circuit; with a
  cycle in flight, right after it. Refused (409) while the target is paused, and with
  ``state.backend: nats`` on a replica that does not hold the target's lease (only the holder
  polls it).
* ``pause``: no further cycles until ``resume``; a cycle in flight finishes. The pause is kept
  in the state store (memory, SQLite, NATS KV), so it survives a restart and, in NATS, holds on
  every replica. Refused when already paused.
* ``resume``: lifts the pause; the next cycle runs when it is due (at once when the interval
  has passed meanwhile). Refused when not paused.
* ``reset``: forgets every checkpoint of the target, so its next cycle starts from the
  provider's initial lookback. Snapshots stay: records that did not change are not announced
  again, so a reset re-reads history to fill holes without repeating it. Refused while a cycle
  of this replica is in flight (pause first, or retry when it ends): the cycle would commit
  its checkpoint over the reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ensemble_tap.poller.scheduler import PollScheduler
from ensemble_tap.state.base import StateStore, TargetControl

ACTIONS = ("run", "pause", "resume", "reset")
# The path segment of a target without a tenant (tenant ids never start with "-").
NO_TENANT = "-"


class UnknownTarget(LookupError):
    """No poll target of that provider and tenant in this service."""


class ControlRefused(Exception):
    """The target's state forbids the action (already paused, a cycle in flight, …)."""


class ControlsUnavailable(Exception):
    """The poller state is not reachable yet (NATS buckets not set up)."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Operator:
    """Who asks, for the pause record and the audit log."""

    by: str  # the admin token slot
    reason: str
    request_id: str = ""


async def apply(
    action: str,
    scheduler: PollScheduler,
    *,
    store: StateStore,
    operator: Operator,
    now_ns: int,
    holder: str | None,
) -> dict[str, Any]:
    """Do ``action`` on ``scheduler``'s target; what it did, for the answer.

    ``holder``: with leases, the replica polling the target when it is not this one ("": no
    replica holds it)."""
    key = scheduler.target.state_key
    # The pause as stored: with leases another replica may have changed it.
    scheduler.status.control = await store.load_control(key)
    if action == "run":
        if scheduler.paused is not None:
            raise ControlRefused("poller is paused: resume it first")
        if holder is not None:
            raise ControlRefused(
                f"this replica does not poll the target (its lease is held by "
                f"{holder or 'no replica'}): ask the holder's admin API"
            )
        running = scheduler.status.cycle_running
        scheduler.request_run()
        return {"scheduled": True, "after_running_cycle": running}
    if action == "pause":
        if scheduler.paused is not None:
            raise ControlRefused(f"poller is already paused (by {scheduler.paused.by})")
        control = TargetControl(
            since_ns=now_ns, by=operator.by, reason=operator.reason, request_id=operator.request_id
        )
        await store.save_control(key, control)
        scheduler.set_control(control)
        return {"cycle_running": scheduler.status.cycle_running}
    if action == "resume":
        if scheduler.paused is None:
            raise ControlRefused("poller is not paused")
        await store.save_control(key, None)
        scheduler.set_control(None)
        return {}
    if action == "reset":
        if scheduler.status.cycle_running:
            raise ControlRefused(
                "a poll cycle is running: retry when it ends, or pause the poller first"
            )
        removed = await store.reset_checkpoints(key)
        scheduler.engine.forget_state()
        scheduler.engine.cursors.clear()
        scheduler.status.checkpoints = {}
        return {"checkpoints_removed": removed}
    raise ValueError(f"unknown poller action {action!r}")
