"""What the sink reports about itself: shown in ``/readyz`` as detail, never failing it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["starting", "running", "degraded", "stopped", "failed"]


@dataclass(slots=True)
class SinkStatus:
    backend: str = ""
    state: State = "starting"
    detail: str = ""
    since: float = field(default_factory=time.time)
    last_insert_at: float | None = None
    pending: int | None = None
    ack_pending: int | None = None
    rows_inserted: int = 0
    notes: list[str] = field(default_factory=list)

    def set(self, state: State, detail: str = "") -> None:
        if state != self.state:
            self.since = time.time()
        self.state, self.detail = state, detail

    @property
    def healthy(self) -> bool:
        return self.state == "running"

    def summary(self) -> str:
        """One line for ``/readyz``: ``ok`` or what is wrong."""
        if self.healthy:
            return "ok"
        text = f"{self.state}: {self.detail}" if self.detail else self.state
        if self.pending is not None:
            text += f" (pending {self.pending})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "state": self.state,
            "detail": self.detail,
            "since": self.since,
            "last_insert_at": self.last_insert_at,
            "pending": self.pending,
            "ack_pending": self.ack_pending,
            "rows_inserted": self.rows_inserted,
            "notes": list(self.notes),
        }
