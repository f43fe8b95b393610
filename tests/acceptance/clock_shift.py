"""`python -m tests.acceptance.clock_shift ARGS` runs `relay ARGS` with a wall clock that
jumps an hour ahead at each SIGUSR2: a mock of the clock only, for a lease to run out
while its attempt is still in flight. Monotonic time (timeouts) is left alone.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

SHIFT_S = 3600
MARK = b"clock shifted\n"  # written to stderr, so the test knows the jump has happened


def main() -> int:
    offset_ns = [0]
    real_time, real_time_ns = time.time, time.time_ns

    def shift(signum: int, frame: FrameType | None) -> None:
        offset_ns[0] += SHIFT_S * 1_000_000_000
        os.write(2, MARK)

    time.time = lambda: real_time() + offset_ns[0] / 1e9  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + offset_ns[0]  # type: ignore[assignment]
    signal.signal(signal.SIGUSR2, shift)
    from relay.cli import main as relay_main  # imported after the patch, like any caller

    return relay_main()


if __name__ == "__main__":
    raise SystemExit(main())
