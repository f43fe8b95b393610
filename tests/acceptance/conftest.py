"""Fixtures of the acceptance suite, and the figures it prints at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.peer_control import PeerProcess, Sink, Smtp, peer

_FIGURES = pytest.StashKey[list[str]]()


class Figures:
    """Lines worth quoting (posted, killed, delivered...), printed after the test summary."""

    def __init__(self, lines: list[str], test: str) -> None:
        self._lines = lines
        self._test = test

    def add(self, text: str) -> None:
        self._lines.append(f"{self._test}: {text}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    lines = request.config.stash.setdefault(_FIGURES, [])
    return Figures(lines, request.node.name)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("acceptance figures")
        for line in lines:
            terminalreporter.line(line)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def sink_process(workdir: Path) -> Iterator[PeerProcess]:
    with peer("sink", workdir) as process:
        yield process


@pytest.fixture(scope="module")
def sink(sink_process: PeerProcess) -> Sink:
    return Sink(sink_process)


@pytest.fixture(scope="module")
def smtp(workdir: Path) -> Iterator[Smtp]:
    with peer("smtp", workdir) as process:
        yield Smtp(process)
