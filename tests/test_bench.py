"""The benchmarks still run: each for about a second, through the relay's public faces.

A refactor that breaks bench/ fails here, not weeks later at `make bench`. Nothing is
asserted about speed: only that each benchmark ran and produced its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)  # four benchmarks, each starting its servers as processes
def test_every_benchmark_runs_and_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--seconds", "1", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["meta"]["seconds"] == 1
    assert results["ingest"]["ratio_relay_to_bare"] is not None
    assert results["ingest"]["python"]["relay"]["bad_responses"] == 0
    for name in ("sequential", "steady 200/s", "steady 500/s"):
        run = results["latency"][name]
        assert run["end_to_end"]["median_ms"] is not None, name
        assert run["inside_relay"]["send"], name
    assert results["latency"]["signature_verified"] is True
    for name in ("webhook", "email"):
        assert results[name]["ratio_relay_to_raw"] is not None, name
        assert results[name]["relay"]["failures"] == 0, name
    assert "summary" in done.stdout
