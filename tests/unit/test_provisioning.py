"""bus/provisioning.py: what is retried, what ends the set-up, and the pauses between."""

from __future__ import annotations

import itertools

import pytest

from ensemble_tap.bus.provisioning import Backoff, SetupRefused, not_yet, until_set_up


def test_pauses_double_up_to_the_ceiling_with_jitter() -> None:
    pauses = list(itertools.islice(Backoff(first=0.1, ceiling=0.5).delays(), 8))
    ceilings = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert all(c / 2 <= p <= c for p, c in zip(pauses, ceilings, strict=True)), pauses


@pytest.mark.parametrize(
    ("code", "err_code", "expected"),
    [
        (503, 10008, True),  # JetStream system temporarily unavailable
        (503, 10023, True),  # insufficient resources
        (400, 10005, True),  # no suitable peers for placement
        (500, 10009, True),  # cluster can not handle request (not leader)
        (400, 10065, False),  # subjects overlap with an existing stream
        (500, 10052, False),  # invalid stream configuration
        (500, 10074, False),  # replicas > 1 not supported in non-clustered mode
        (None, None, False),
    ],
)
def test_which_jetstream_errors_mean_not_yet(
    code: int | None, err_code: int | None, expected: bool
) -> None:
    assert not_yet(code, err_code) is expected


async def test_failures_are_retried_and_reported_until_the_step_succeeds() -> None:
    attempts: list[int] = []
    reports: list[str] = []

    async def step() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError
        return "made"

    result = await until_set_up(
        step, what="stream S", backoff=Backoff(first=0.001, ceiling=0.002), report=reports.append
    )
    assert result == "made"
    assert reports == ["setting up stream S: TimeoutError"] * 2


async def test_a_refusal_ends_the_set_up_at_once() -> None:
    attempts: list[int] = []

    async def step() -> None:
        attempts.append(1)
        raise SetupRefused("subjects overlap")

    with pytest.raises(SetupRefused, match="subjects overlap"):
        await until_set_up(step, what="s", backoff=Backoff(first=1, ceiling=1), report=print)
    assert len(attempts) == 1
