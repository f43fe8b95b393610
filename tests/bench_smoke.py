"""Run `python -m bench --seconds 1` beside the suite, for tests/test_bench.py.

Started when collection finds that test and stopped at the end of the session (hooks in
tests/conftest.py); kept apart from the test module so both see one stash key.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH_TIMEOUT_S = 300.0  # five benchmarks, each starting its servers as processes


@dataclass
class BenchRun:
    process: subprocess.Popen[str]
    out: Path
    workdir: tempfile.TemporaryDirectory[str]


RUN = pytest.StashKey[BenchRun]()


def start_bench(session: pytest.Session) -> None:
    """Start `python -m bench --seconds 1` if this test is to run (tests/conftest.py)."""
    if not any(item.nodeid.startswith("tests/test_bench.py") for item in session.items):
        return
    workdir = tempfile.TemporaryDirectory(prefix="relay-bench-smoke-")
    out = Path(workdir.name) / "results.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--seconds", "1", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    session.config.stash[RUN] = BenchRun(process, out, workdir)


def stop_bench(session: pytest.Session) -> None:
    run = session.config.stash.get(RUN, None)
    if run is not None:
        if run.process.poll() is None:
            run.process.kill()
        run.process.communicate()
        run.workdir.cleanup()
