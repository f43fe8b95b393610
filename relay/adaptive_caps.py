"""Per-destination caps that grow while a receiver answers fast and healthy (AIMD).

`delivery.per_destination_concurrency` (default 4) stays each destination's floor, so
that one affiliate cannot starve the others; but at 4 in flight a fast receiver takes
about 430 deliveries a second at most (issue 10). So a destination earns more slots the
way TCP grows its window: each run of fast successes as long as its cap adds one slot,
up to `delivery.per_destination_max_concurrency`; an error, a timeout or a 429 halves
the cap (never below the floor), at most once per `DECREASE_INTERVAL_S`, since the
attempts already in flight at the higher cap fail together and are one signal, not many.
A slow success holds the cap where it is: the receiver is at its pace.

Pure: the dispatcher reports outcomes and reads caps; the clock is injected.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.clock import Clock

# A success slower than this does not earn a slot: the receiver is busy, not idle.
FAST_S = 0.5
# Failures closer together than this are the same congestion: halve once for them.
DECREASE_INTERVAL_S = 1.0


@dataclass
class _Window:
    cap: int
    successes: int = 0  # fast successes since the cap last moved
    decreased_at_ms: int | None = None


class AdaptiveCaps:
    def __init__(self, floor: int, ceiling: int, clock: Clock, *, fast_s: float = FAST_S) -> None:
        self._floor = floor
        self._ceiling = max(ceiling, floor)
        self._clock = clock
        self._fast_ms = fast_s * 1000
        # Only destinations above the floor, or just halved, have an entry: bounded by
        # the destinations with traffic, and a quiet one costs nothing.
        self._windows: dict[str, _Window] = {}

    def cap(self, key: str) -> int:
        window = self._windows.get(key)
        return self._floor if window is None else window.cap

    def raised(self) -> dict[str, int]:
        """The caps above the floor, for the store's claim (`Store.claim_due(caps=)`)."""
        return {key: w.cap for key, w in self._windows.items() if w.cap > self._floor}

    def succeeded(self, key: str, latency_ms: float, in_flight: int) -> None:
        """A delivery to `key` succeeded in `latency_ms`, with `in_flight` attempts to it
        (itself included) at that moment. Only a destination using its whole cap earns
        more: a quiet one keeps its cap, so it never bursts at a receiver it has not
        tried at that pace."""
        if self._ceiling == self._floor or latency_ms > self._fast_ms:
            return
        if in_flight < self.cap(key):
            return
        window = self._windows.setdefault(key, _Window(self._floor))
        window.successes += 1
        if window.successes >= window.cap and window.cap < self._ceiling:
            window.cap += 1
            window.successes = 0

    def failed(self, key: str) -> None:
        window = self._windows.get(key)
        if window is None:
            return  # at the floor already
        now_ms = self._clock.now_ms()
        recent = window.decreased_at_ms is not None and (
            now_ms - window.decreased_at_ms < DECREASE_INTERVAL_S * 1000
        )
        window.successes = 0
        if recent:
            return
        window.cap = max(self._floor, window.cap // 2)
        window.decreased_at_ms = now_ms
        if window.cap == self._floor:
            del self._windows[key]
