"""The session-wide check that no log record quotes buyer data can itself fail."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from tests.acceptance.buyer_data import buyer_values, buyer_values_in
from tests.acceptance.harness import REPO
from tests.acceptance.log_privacy import BuyerDataWatch


def test_the_fixtures_buyer_values_are_known() -> None:
    values = buyer_values()
    for expected in ("maria.gonzalez@example.com", "María González", "+52 55 1234 5678"):
        assert expected in values
    assert "GOMA900101MDFNRR09" in values  # a document
    assert "Lucía Fernández" not in values  # the affiliate is no buyer


def test_each_spelling_of_a_buyer_value_is_found() -> None:
    assert buyer_values_in("to maria.gonzalez%40example.com") == [
        "maria.gonzalez",
        "maria.gonzalez@example.com",
    ]
    assert buyer_values_in('{"name": "Mar\\u00eda Gonz\\u00e1lez"}') == ["María González"]
    assert buyer_values_in("delivery 12 to acme/K12345678M/0: delivered") == []


def test_the_watch_notes_a_record_that_quotes_buyer_data() -> None:
    watch = BuyerDataWatch()
    logger = logging.getLogger("relay.privacy-probe")
    logger.addHandler(watch)
    logger.propagate = False  # these leaks are on purpose: keep them from the session's watch
    try:
        logger.warning("delivery %d failed", 7)
        logger.warning("sent to %s", "ana.souza@example.com")
        try:
            raise ValueError("document 12345678909 rejected")
        except ValueError:
            logger.exception("delivery %d", 8)
    finally:
        logger.removeHandler(watch)
        logger.propagate = True
    assert len(watch.leaks) == 2
    assert "ana.souza@example.com" in watch.leaks[0]
    assert "12345678909" in watch.leaks[1]  # found in the traceback too


def test_a_session_whose_logs_quote_buyer_data_fails(tmp_path: Path) -> None:
    (tmp_path / "test_leak.py").write_text(
        "import logging\n"
        "def test_clean():\n"
        "    logging.getLogger('relay.x').info('delivery 1 delivered')\n"
        "def test_leaky():\n"
        "    logging.getLogger('relay.x').info('buyer %s', 'maria.gonzalez@example.com')\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.acceptance.log_privacy",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_leak.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 passed" in done.stdout  # every test passed; the logs fail the session
    assert "test_leak.py::test_leaky: relay.x INFO quotes maria.gonzalez" in done.stdout
    assert "test_clean" not in done.stdout.split("buyer data in the logs")[1]
