"""The retry schedule, pure (issue 3 §2), including Convoy's two classic bugs."""

from __future__ import annotations

import random

import pytest

from relay.channels.webhook import parse_retry_after_s
from relay.outcomes import PermanentError, TransientError
from relay.retry import JITTER_FRACTION, RETRY_AFTER_CAP_S, next_retry

SCHEDULE = (60.0, 300.0, 1800.0, 7200.0)


def test_transient_failures_follow_the_schedule_within_jitter() -> None:
    rng = random.Random(1)
    for attempt, base in enumerate(SCHEDULE, start=1):
        for _ in range(200):
            decision = next_retry(attempt, SCHEDULE, TransientError("503"), rng)
            assert not decision.give_up
            assert base * (1 - JITTER_FRACTION) <= decision.delay_s <= base * (1 + JITTER_FRACTION)


def test_jitter_actually_spreads_retries() -> None:
    rng = random.Random(2)
    delays = {next_retry(1, SCHEDULE, TransientError("x"), rng).delay_s for _ in range(50)}
    assert len(delays) > 40


def test_schedule_running_out_gives_up_after_five_attempts() -> None:
    decision = next_retry(5, SCHEDULE, TransientError("still 500"), random.Random(0))
    assert decision.give_up
    assert "5 attempts" in decision.reason


def test_permanent_failure_gives_up_at_once() -> None:
    decision = next_retry(1, SCHEDULE, PermanentError("404"), random.Random(0))
    assert decision.give_up
    assert "permanent" in decision.reason


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(7.0, 7.0), (0.0, 0.0), (-3.0, 0.0), (10**9, RETRY_AFTER_CAP_S)]
)
def test_retry_after_is_honoured_and_capped(retry_after: float, expected: float) -> None:
    error = TransientError("429", retry_after_s=retry_after)
    decision = next_retry(2, SCHEDULE, error, random.Random(0))
    assert (decision.give_up, decision.delay_s) == (False, expected)


def test_retry_after_does_not_extend_the_number_of_attempts() -> None:
    error = TransientError("429", retry_after_s=1.0)
    assert next_retry(len(SCHEDULE) + 1, SCHEDULE, error, random.Random(0)).give_up


def test_retries_always_stop_and_are_never_skipped() -> None:
    """Convoy: retries that never stop; retries silently skipped. Simulate whole lives."""
    rng = random.Random(3)
    for schedule in [(), (0.01,), SCHEDULE, tuple(float(i) for i in range(1, 30))]:
        attempts = 0
        while True:
            attempts += 1
            decision = next_retry(attempts, schedule, TransientError("down"), rng)
            if decision.give_up:
                break
            assert decision.delay_s > 0 or schedule[attempts - 1] == 0  # a real, future retry
            assert attempts < 1000
        assert attempts == len(schedule) + 1  # every scheduled retry happened, then stop


@pytest.mark.parametrize("value", ["²", "٣", "\uff11\uff12", "7²", "⁷"])
def test_retry_after_with_non_ascii_digits_is_unusable_not_a_crash(value: str) -> None:
    """`"²".isdigit()` is True but `float("²")` raises: only ASCII delta-seconds count."""
    assert parse_retry_after_s(value, now_s=0.0) is None


def test_retry_after_is_honoured_from_a_real_header_value() -> None:
    assert parse_retry_after_s(" 12 ", now_s=0.0) == 12.0
