"""A pytest plugin, loaded for every run by pyproject's addopts: no log record of the whole
session may quote a buyer value of the fixtures.

The relay's own loggers are opened down to DEBUG so that their INFO lines are judged
too (the root logger stays at WARNING for everyone else). A leak does not stop the test
that caused it; the session fails at the end, naming each test and logger.
"""

from __future__ import annotations

import logging

import pytest

from tests.acceptance.buyer_data import buyer_values_in

RELAY_LOGGER = "relay"
_formatter = logging.Formatter()


class BuyerDataWatch(logging.Handler):
    """Notes every record that quotes a buyer value; keeps nothing else."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []
        self.current = "(outside any test)"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string must not hide its arguments
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += "\n" + _formatter.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        found = buyer_values_in(text)
        if found:
            self.leaks.append(
                f"{self.current}: {record.name} {record.levelname} quotes {', '.join(found)}"
            )


_WATCH = pytest.StashKey[BuyerDataWatch]()
_LEVEL = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    watch = BuyerDataWatch()
    config.stash[_WATCH] = watch
    relay_logger = logging.getLogger(RELAY_LOGGER)
    config.stash[_LEVEL] = relay_logger.level
    relay_logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(watch)


def pytest_unconfigure(config: pytest.Config) -> None:
    watch = config.stash.get(_WATCH, None)
    if watch is not None:
        logging.getLogger().removeHandler(watch)
        logging.getLogger(RELAY_LOGGER).setLevel(config.stash[_LEVEL])


def pytest_runtest_logstart(nodeid: str) -> None:
    for watch in _watches():
        watch.current = nodeid


def _watches() -> list[BuyerDataWatch]:
    return [h for h in logging.getLogger().handlers if isinstance(h, BuyerDataWatch)]


def pytest_sessionfinish(session: pytest.Session) -> None:
    watch = session.config.stash.get(_WATCH, None)
    if watch is not None and watch.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    watch = config.stash.get(_WATCH, None)
    if watch is None or not watch.leaks:
        return
    terminalreporter.section("buyer data in the logs", sep="=", red=True, bold=True)
    for leak in watch.leaks:
        terminalreporter.line(leak)
    terminalreporter.line(f"{len(watch.leaks)} log record(s) quote buyer data: the session fails")
