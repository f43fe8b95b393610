"""The adaptive per-destination cap, driven with a fake clock: grow on fast successes at
the cap, hold on slow ones, halve on failures (once per burst of them), floor and ceiling."""

from __future__ import annotations

from relay.adaptive_caps import DECREASE_INTERVAL_S, FAST_S, AdaptiveCaps
from tests.unit.engine_kit import FakeClock

KEY = "acme/K1/hook"
FAST_MS = FAST_S * 1000 / 10


def saturated_successes(caps: AdaptiveCaps, count: int, latency_ms: float = FAST_MS) -> None:
    for _ in range(count):
        caps.succeeded(KEY, latency_ms, in_flight=caps.cap(KEY))


def test_a_fast_busy_destination_gains_one_slot_per_cap_of_successes() -> None:
    caps = AdaptiveCaps(4, 32, FakeClock())
    saturated_successes(caps, 3)
    assert caps.cap(KEY) == 4 and caps.raised() == {}
    saturated_successes(caps, 1)
    assert caps.cap(KEY) == 5 and caps.raised() == {KEY: 5}
    saturated_successes(caps, 5)
    assert caps.cap(KEY) == 6
    saturated_successes(caps, 10_000)
    assert caps.cap(KEY) == 32  # the ceiling


def test_slow_or_quiet_successes_hold_the_cap() -> None:
    caps = AdaptiveCaps(4, 32, FakeClock())
    saturated_successes(caps, 100, latency_ms=FAST_S * 1000 + 1)
    for _ in range(100):
        caps.succeeded(KEY, FAST_MS, in_flight=1)  # never used its 4 slots
    assert caps.cap(KEY) == 4


def test_a_failure_halves_once_per_burst_and_never_below_the_floor() -> None:
    clock = FakeClock()
    caps = AdaptiveCaps(4, 32, clock)
    saturated_successes(caps, 10_000)
    assert caps.cap(KEY) == 32
    for _ in range(20):  # the attempts in flight at 32 fail together: one signal
        caps.failed(KEY)
    assert caps.cap(KEY) == 16
    clock.now += int(DECREASE_INTERVAL_S * 1000)
    caps.failed(KEY)
    assert caps.cap(KEY) == 8
    clock.now += int(DECREASE_INTERVAL_S * 1000)
    caps.failed(KEY)
    clock.now += int(DECREASE_INTERVAL_S * 1000)
    caps.failed(KEY)
    assert caps.cap(KEY) == 4 and caps.raised() == {}
    saturated_successes(caps, 4)
    assert caps.cap(KEY) == 5  # it can earn its way back


def test_a_ceiling_at_the_floor_turns_adapting_off() -> None:
    caps = AdaptiveCaps(4, 4, FakeClock())
    saturated_successes(caps, 1_000)
    caps.failed(KEY)
    assert caps.cap(KEY) == 4 and caps.raised() == {}
    assert AdaptiveCaps(8, 2, FakeClock()).cap(KEY) == 8  # a ceiling below the floor: none
