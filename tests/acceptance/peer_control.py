"""The test's side of the peer processes: start and stop them, script them, read them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.acceptance.harness import (
    REPO,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    get_json,
    post_json,
    wait_for,
)


@dataclass
class PeerProcess:
    """A peer from `tests.acceptance.peers`, started and stopped by the test."""

    proc: subprocess.Popen[bytes]
    ports: dict[str, int]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def peer(kind: str, workdir: Path, *args: str) -> Iterator[PeerProcess]:
    ready = workdir / f"{kind}-{uuid.uuid4().hex[:8]}.ready"
    log = (workdir / f"{kind}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.acceptance.peers", kind, "--ready-file", str(ready), *args],
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    log.close()
    running = PeerProcess(proc, {})
    try:

        def started() -> bool:
            assert proc.poll() is None, (
                f"{kind} peer exited: {(workdir / f'{kind}.log').read_text()}"
            )
            return ready.exists()

        wait_for(started, timeout_s=START_TIMEOUT_S, what=f"{kind} peer listening")
        running.ports = json.loads(ready.read_text())
        yield running
    finally:
        running.stop()


class Sink:
    """The test's handle on a sink process: script replies per path, read what arrived."""

    def __init__(self, process: PeerProcess) -> None:
        self.process = process
        self.port = process.ports["http"]

    def url(self, path: str, *, tls: bool = False) -> str:
        if tls:
            return f"https://127.0.0.1:{self.process.ports['tls']}{path}"
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def hang_url(self) -> str:
        return f"http://127.0.0.1:{self.process.ports['hang']}/hook"

    def script(
        self, path: str, *replies: dict[str, Any], default: dict[str, Any] | None = None
    ) -> None:
        data: dict[str, Any] = {"path": path, "replies": list(replies)}
        if default is not None:
            data["default"] = default
        post_json(self.port, "/_control/script", data)

    def release(self, path: str) -> None:
        post_json(self.port, "/_control/release", {"path": path})

    def hits(self, path: str | None = None) -> list[dict[str, Any]]:
        query = "" if path is None else f"?path={path}"
        hits: list[dict[str, Any]] = get_json(self.port, f"/_control/hits{query}")
        return hits

    def hang_counts(self) -> dict[str, int]:
        counts: dict[str, int] = get_json(self.port, "/_control/hang")
        return counts


class Smtp:
    """The test's handle on an SMTP peer process."""

    def __init__(self, process: PeerProcess) -> None:
        self.process = process
        self.port = process.ports["smtp"]

    def script(
        self, replies: dict[str, list[str]] | None = None, *, delay_s: float | None = None
    ) -> None:
        data: dict[str, Any] = {"replies": replies or {}}
        if delay_s is not None:
            data["delay_s"] = delay_s
        post_json(self.process.ports["control"], "/_control/script", data)

    def mails(self) -> list[dict[str, Any]]:
        mails: list[dict[str, Any]] = get_json(self.process.ports["control"], "/_control/mails")
        return mails
