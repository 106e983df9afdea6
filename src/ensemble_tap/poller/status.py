"""Runtime status of every poller, for ``GET /admin/poller-status`` and the poller gauges.

Field names and formats are the reference's (Go duration strings, RFC3339Nano times); unset
times are left out instead of Go's ``0001-01-01T00:00:00Z``. Added: ``stuck``, ``circuit``
(closed | open | half_open), ``next_run_at``, ``checkpoints`` per stream, ``last_cycle`` (the
counts of the last cycle) and ``checkpoint_lag_seconds``. With leases (``state.backend:
nats``): ``lease_holder``, the replica polling the target (null while no replica holds it),
and ``lease_since``, since when it holds it; the other fields are this replica's own view (a
target polled elsewhere shows the cycles this replica ran before it handed it over, and is
never ``stuck`` here). Operators' controls (#16): ``paused`` (with ``paused_since``,
``paused_by``, ``pause_reason`` when it is) and ``cycle_running``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ensemble_tap.config.durations import format_duration
from ensemble_tap.events import format_time_ns
from ensemble_tap.poller.clock import Clock
from ensemble_tap.poller.targets import PollTarget
from ensemble_tap.state.base import TargetControl

STUCK_INTERVALS = 3


@dataclass(slots=True)
class PollerStatus:
    provider: str
    tenant_id: str
    interval: float
    rate_limit_per_sec: float
    burst: int
    failure_budget: int
    circuit_break: float
    jitter_ratio: float
    last_run_ns: int | None = None
    last_success_ns: int | None = None
    last_error_ns: int | None = None
    last_error: str = ""
    consecutive_failures: int = 0
    circuit: str = "closed"
    next_run_ns: int | None = None
    checkpoints: dict[str, int | None] = field(default_factory=dict)
    last_cycle: dict[str, Any] | None = None
    leased: bool = False  # state.backend nats: a replica polls the target while it holds it
    lease: tuple[str, int | None] | None = None  # (holder, since) as last seen
    control: TargetControl | None = None  # an operator's pause, as last read
    cycle_running: bool = False
    held_here: bool = False  # leased: this replica polls the target now

    @property
    def reported_here(self) -> bool:
        """Whether this replica speaks for the target's health: always without leases; with
        them only while it polls the target (another replica's cycles are not seen here)."""
        return not self.leased or self.held_here

    def configure(self, target: PollTarget) -> None:
        self.interval = target.interval
        self.rate_limit_per_sec = target.rate_limit_per_sec
        self.burst = target.burst
        self.failure_budget = target.failure_budget
        self.circuit_break = target.circuit_break
        self.jitter_ratio = target.jitter_ratio

    @property
    def checkpoint_ns(self) -> int | None:
        """The oldest stream checkpoint: everything before it has been processed."""
        known = [value for value in self.checkpoints.values() if value is not None]
        return min(known) if known else None

    def mark_run(self, now_ns: int) -> None:
        self.last_run_ns = now_ns

    def mark_success(self, now_ns: int) -> None:
        self.last_success_ns = now_ns
        self.last_error = ""
        self.last_error_ns = None
        self.consecutive_failures = 0

    def mark_error(self, now_ns: int, error: str) -> None:
        self.last_error = error
        self.last_error_ns = now_ns
        self.consecutive_failures += 1

    def stuck(self, now_ns: int) -> bool:
        if not self.reported_here:
            return False
        if self.failure_budget > 0 and self.consecutive_failures >= self.failure_budget:
            return True
        if self.last_run_ns is None:
            return False
        reference = self.last_success_ns if self.last_success_ns is not None else self.last_run_ns
        interval = self.interval if self.interval > 0 else 60.0
        return (now_ns - reference) / 1e9 > STUCK_INTERVALS * interval

    def to_json(self, now_ns: int) -> dict[str, Any]:
        value: dict[str, Any] = {"provider": self.provider}
        if self.tenant_id:
            value["tenant_id"] = self.tenant_id
        value.update(
            interval=format_duration(self.interval),
            rate_limit_per_sec=_number(self.rate_limit_per_sec),
            burst=self.burst,
            failure_budget=self.failure_budget,
            circuit_break_duration=format_duration(self.circuit_break),
            jitter_ratio=_number(self.jitter_ratio),
        )
        for name, ns in (
            ("last_run_at", self.last_run_ns),
            ("last_success_at", self.last_success_ns),
            ("last_error_at", self.last_error_ns),
        ):
            if ns is not None:
                value[name] = format_time_ns(ns)
        if self.last_error:
            value["last_error"] = self.last_error
        checkpoint = self.checkpoint_ns
        if checkpoint is not None:
            value["last_checkpoint"] = format_time_ns(checkpoint)
        value["consecutive_failures"] = self.consecutive_failures
        value["stuck"] = self.stuck(now_ns)
        value["circuit"] = self.circuit
        if self.next_run_ns is not None:
            value["next_run_at"] = format_time_ns(self.next_run_ns)
        if self.checkpoints:
            value["checkpoints"] = {
                stream: format_time_ns(ns)
                for stream, ns in sorted(self.checkpoints.items())
                if ns is not None
            }
            if checkpoint is not None:
                value["checkpoint_lag_seconds"] = round(max(0, now_ns - checkpoint) / 1e9, 3)
        if self.last_cycle is not None:
            value["last_cycle"] = dict(self.last_cycle)
        value["paused"] = self.control is not None
        if self.control is not None:
            value["paused_since"] = format_time_ns(self.control.since_ns)
            value["paused_by"] = self.control.by
            value["pause_reason"] = self.control.reason
        value["cycle_running"] = self.cycle_running
        if self.leased:
            holder, since = self.lease if self.lease is not None else (None, None)
            value["lease_holder"] = holder
            if since is not None:
                value["lease_since"] = format_time_ns(since)
        return value


def _number(value: float) -> float | int:
    """Integral floats as integers, as Go prints them (``4``, not ``4.0``)."""
    return int(value) if float(value).is_integer() else value


class StatusRegistry:
    """Status entries by state key; in memory only."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._entries: dict[str, PollerStatus] = {}

    def upsert(self, target: PollTarget) -> PollerStatus:
        entry = self._entries.get(target.state_key)
        if entry is None:
            entry = PollerStatus(
                provider=target.provider,
                tenant_id=target.tenant_id,
                interval=target.interval,
                rate_limit_per_sec=target.rate_limit_per_sec,
                burst=target.burst,
                failure_budget=target.failure_budget,
                circuit_break=target.circuit_break,
                jitter_ratio=target.jitter_ratio,
            )
            self._entries[target.state_key] = entry
        else:
            entry.configure(target)
        return entry

    def entries(self) -> list[PollerStatus]:
        return sorted(self._entries.values(), key=lambda e: (e.provider, e.tenant_id))

    def snapshot(self) -> list[dict[str, Any]]:
        """Every entry as the admin API shows it, sorted by provider then tenant."""
        now = self.clock.now_ns()
        return [entry.to_json(now) for entry in self.entries()]
