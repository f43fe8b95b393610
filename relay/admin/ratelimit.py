"""Bound how fast one address may guess the admin token, in bounded memory.

Each remote address has a bucket of `burst` tries that refills at `refill_per_s`; a
wrong token (a login, or an API call) takes one, and an empty bucket is refused with
429 before the token is even looked at. At most `max_addresses` buckets are kept; the
least recently touched goes first, so a flood of addresses costs memory once.

Behind a reverse proxy every request comes from the proxy's address, so the buckets
become one: guessing is limited all the same, at the price of the limit being shared.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_BURST = 10  # a few typos, then a pause
DEFAULT_REFILL_PER_S = 10 / 60  # ten more tries a minute: 14,400 a day, against 2^128
DEFAULT_MAX_ADDRESSES = 10_000  # about a megabyte of buckets at most


class LoginLimiter:
    def __init__(
        self,
        *,
        burst: int = DEFAULT_BURST,
        refill_per_s: float = DEFAULT_REFILL_PER_S,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._refill_per_s = refill_per_s
        self._max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def retry_after_s(self, address: str) -> float | None:
        """None if `address` may try now; else how long until it may."""
        tokens = self._tokens(address)
        if tokens >= 1:
            return None
        return (1 - tokens) / self._refill_per_s

    def failed(self, address: str) -> None:
        """One wrong token from `address`."""
        tokens = self._tokens(address)
        self._buckets[address] = (max(tokens - 1, 0.0), self._clock())
        self._buckets.move_to_end(address)
        while len(self._buckets) > self._max_addresses:
            self._buckets.popitem(last=False)

    def tracked(self) -> int:
        return len(self._buckets)

    def _tokens(self, address: str) -> float:
        found = self._buckets.get(address)
        if found is None:
            return self._burst
        tokens, at = found
        return min(self._burst, tokens + (self._clock() - at) * self._refill_per_s)
