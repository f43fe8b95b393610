"""bench/instructions.py still runs: every measure's old and new way, once, in-process.

Counting runs under valgrind and takes minutes, so it is not part of `make test`; what a
refactor could break (a renamed function, a changed signature) breaks here instead.
Nothing about cost is asserted.
"""

from __future__ import annotations

import pytest

from bench.instructions import PAIRS, run_in_qsort


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_measure_runs_its_old_and_new_way(name: str) -> None:
    _, old, new = PAIRS[name]
    for make in (old, new):
        if make is not None:
            assert make()() is not None


def test_the_work_runs_inside_qsort_as_many_times_as_asked() -> None:
    calls: list[int] = []
    run_in_qsort(lambda: calls.append(1), 7)
    assert len(calls) == 7
