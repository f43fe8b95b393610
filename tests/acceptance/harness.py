"""Run the real `relay serve` and its peers as processes, and read what they did.

Every wait here is bounded and polls an outcome; none sleeps for a retry delay. The
relay's stderr (its whole log) goes to a file per relay, and stopping a relay fails the
test if that log quotes a buyer value of the fixtures.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.acceptance.buyer_data import buyer_values_in
from tests.conftest import HOTTOK, SECRET, base_config_dict, fixture_json
from tests.peers import free_port
from tests.test_cli import write_toml

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0  # a cold start on a loaded 2-core machine, with margin
STOP_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 60.0
POLL_S = 0.02
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = POLL_S
) -> T:
    """Poll until `predicate()` is truthy and return it; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(interval_s)


# -- HTTP -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    timeout_s: float = 10.0,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def get_json(port: int, path: str) -> Any:
    reply = http_request(port, "GET", path)
    assert reply.status == 200, reply
    return reply.json()


def post_json(port: int, path: str, data: Any) -> Any:
    body = json.dumps(data).encode()
    reply = http_request(port, "POST", path, body, {"Content-Type": "application/json"})
    assert reply.status == 200, reply
    return reply.json()


# -- the relay ---------------------------------------------------------------------------


def relay_config(
    workdir: Path, *, name: str = "relay", port: int | None = None, **delivery: Any
) -> dict[str, Any]:
    """The shared test config (tests/conftest.py) on its own port and files, short retries."""
    raw = base_config_dict(workdir)
    raw["server"] = {"port": port or free_port()}
    raw["storage"]["sqlite_path"] = str(workdir / f"{name}.sqlite3")
    raw["email"]["maildir"] = str(workdir / f"{name}-mail")
    raw["delivery"].update({"retry_delays": ["50ms"] * 4, **delivery})
    return raw


def webhook_affiliate(code: str, url: str, **extra: Any) -> dict[str, Any]:
    destination = {"kind": "webhook", "url": url, "secret": SECRET, **extra}
    return {
        "code": code,
        "name": f"Affiliate {code}",
        "buyer_data": True,
        "destinations": [destination],
    }


def slip_event(affiliate_code: str = "K12345678M", **payment: Any) -> dict[str, Any]:
    """The OXXO fixture as a fresh event (new id) naming `affiliate_code`."""
    event = fixture_json("billet_printed_oxxo.json")
    event["id"] = str(uuid.uuid4())
    event["data"]["affiliates"] = [{"affiliate_code": affiliate_code, "name": "Ana"}]
    event["data"]["purchase"]["payment"].update(payment)
    return event


@dataclass
class Relay:
    """`relay serve` in a process: started, killed, restarted; its log kept in one file."""

    config_path: Path
    port: int
    db_path: Path
    log_path: Path
    module: str = "relay"  # or a wrapper that runs relay's main, e.g. a shifted clock
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)  # time.monotonic() of each spawn
    ends: list[float] = field(default_factory=list)  # ... and of each death, once seen

    @classmethod
    def from_config(cls, raw: dict[str, Any], workdir: Path, name: str = "relay") -> Relay:
        raw = copy.deepcopy(raw)
        config_path = write_toml(raw, workdir / f"{name}.toml")
        return cls(
            config_path=config_path,
            port=raw["server"]["port"],
            db_path=Path(raw["storage"]["sqlite_path"]),
            log_path=workdir / f"{name}.log",
        )

    # -- life -----------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.starts.append(time.monotonic())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--config", str(self.config_path), "serve"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"relay exited {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                return http_request(self.port, "GET", "/healthz", timeout_s=2).status == 200
            return False

        wait_for(ready, timeout_s=START_TIMEOUT_S, what="relay answering /healthz")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no drain, as a power cut or the OOM killer would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.ends.append(time.monotonic())

    def terminate(self) -> int:
        """SIGTERM: drain what is in flight, then exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.ends.append(time.monotonic())
        return code

    def stop(self) -> None:
        """End of the test: stop if running, then judge the whole log."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()
        leaked = buyer_values_in(self.log())
        assert not leaked, f"the relay's log quotes buyer data {leaked}:\n{self.log_tail()}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # -- talking to it ----------------------------------------------------------------

    def post(
        self,
        body: bytes | dict[str, Any],
        *,
        token: str | None = HOTTOK,
        content_type: str = "application/json",
        timeout_s: float = 10.0,
    ) -> Reply:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["X-HOTMART-HOTTOK"] = token
        return http_request(
            self.port, "POST", "/hotmart/webhook", data, headers, timeout_s=timeout_s
        )

    def cli(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """A `relay` command against the same config, as an operator would type it."""
        return subprocess.run(
            [sys.executable, "-m", "relay", "--config", str(self.config_path), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def show(self, delivery_id: int) -> dict[str, Any]:
        done = self.cli("show", str(delivery_id), "--json")
        assert done.returncode == 0, done.stderr
        detail: dict[str, Any] = json.loads(done.stdout)
        return detail

    # -- reading the store (read-only, as a second process may) ------------------------

    def query(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def deliveries_of(self, hotmart_id: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT d.* FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE e.hotmart_id = ? ORDER BY d.id",
            (hotmart_id,),
        )

    def settled(
        self, hotmart_id: str, statuses: tuple[str, ...] = ("delivered", "failed")
    ) -> sqlite3.Row | None:
        """The event's one delivery once it reached one of `statuses`."""
        rows = self.deliveries_of(hotmart_id)
        if len(rows) == 1 and rows[0]["status"] in statuses:
            return rows[0]
        return None

    # -- its memory ------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The serving process and its children (ingest and dispatcher processes)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *(int(pid) for pid in children)]

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (the peak) of the relay, from /proc: summed over its processes
        (for several, the sum of peaks bounds the peak of the sum from above)."""
        found = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError):  # a child that just exited
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name in found:
                        found[name] += int(value.split()[0])
        return found

    def reset_peak_memory(self) -> None:
        """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM)."""
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")


def outcome_line(fault: str, row: Any, detail: dict[str, Any]) -> str:
    """One row of the fault matrix: what the store recorded for the fault's delivery."""
    attempts = ", ".join(
        f"{a['outcome']} {a['status_code'] if a['status_code'] is not None else '-'}"
        for a in detail["attempts"]
    )
    return f"{fault}: {row['status']} after {len(detail['attempts'])} attempt(s) [{attempts}]"


@contextlib.contextmanager
def running(relay: Relay) -> Iterator[Relay]:
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
