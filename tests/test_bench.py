"""The benchmarks still run: each for about a second, through the relay's public faces.

A refactor that breaks bench/ fails here, not weeks later at `make bench`. Nothing is
asserted about speed: only that each benchmark ran and produced its figures.

The benchmarks run in processes of their own, so they start when collection finds this
test (tests/bench_smoke.py, started from tests/conftest.py) and run beside the
rest of the suite, which spends most of its time waiting; the test collects the result.
"""

from __future__ import annotations

import json

import pytest

from tests.bench_smoke import BENCH_TIMEOUT_S, RUN


@pytest.mark.timeout(BENCH_TIMEOUT_S + 10)
def test_every_benchmark_runs_and_reports_its_figures(request: pytest.FixtureRequest) -> None:
    run = request.config.stash[RUN]
    output, _ = run.process.communicate(timeout=BENCH_TIMEOUT_S)
    assert run.process.returncode == 0, output[-6000:]
    results = json.loads(run.out.read_text(encoding="utf-8"))
    assert results["meta"]["seconds"] == 1
    assert results["ingest"]["ratio_relay_to_bare"] is not None
    for mode in ("withheld", "delivering"):
        assert results["ingest"][mode]["ratio_relay_to_bare"] is not None, mode
        assert results["ingest"][mode]["bad_responses"] == 0, mode
    for name in ("sequential", "steady 200/s", "steady 500/s"):
        run_result = results["latency"][name]
        assert run_result["end_to_end"]["median_ms"] is not None, name
        assert run_result["inside_relay"]["send"], name
    assert results["latency"]["signature_verified"] is True
    for name in ("webhook", "email"):
        assert results[name]["ratio_relay_to_raw"] is not None, name
        assert results[name]["relay"]["failures"] == 0, name
    for layout in ("1 ingest + 0 dispatcher", "1 ingest + 1 dispatcher", "2 ingest + 1 dispatcher"):
        assert results["workers"][layout]["bad_responses"] == 0, layout
        assert results["workers"][layout]["delivered_per_s"] is not None, layout
    for name in ("sqlite x1", "postgres x1", "postgres x2"):
        assert results["stores"][name]["delivery_per_s"] > 0, name
        assert results["stores"][name]["ingest_non_200"] == 0, name
    assert results["claim"]["median_ms_at_largest"] is not None
    # Every row of issue 10's table, with a figure, in the JSON and the printed table.
    assert len(results["table"]) == 6
    assert all(row["figure"] is not None for row in results["table"]), results["table"]
    assert "| measure | now | target |" in output
