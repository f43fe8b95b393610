"""What every benchmark shares: payloads, config files, child processes, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from relay.config import Config, load_config
from relay.decide import decide
from relay.hotmart import parse_json_event
from relay.outbox import decided_rows, new_event
from relay.records import HistoryFilter, NewEvent
from relay.store import Store
from relay.store.backend import open_store

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "billet_printed_oxxo.json"
HOST = "127.0.0.1"  # every benchmark stays on loopback
HOTTOK = "bench-hottok"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - a public test secret
AFFILIATE = "K12345678M"  # the affiliate the OXXO fixture names
INGEST_PATH = "/hotmart/webhook"
READY_TIMEOUT_S = 20.0  # a cold start of `relay serve` on a busy 2-core machine
STOP_TIMEOUT_S = 10.0  # after SIGTERM, before SIGKILL
SEED_BATCH = 1000  # slips committed concurrently: the group commit writes them together
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class EventBodies:
    """The OXXO fixture with a fresh `id` per call, so relay never dedupes a request."""

    def __init__(self, fixture: Path = FIXTURE) -> None:
        raw = fixture.read_bytes()
        original_id = json.loads(raw)["id"].encode()
        self._prefix, self._suffix = raw.split(original_id, 1)

    def next(self) -> tuple[str, bytes]:
        event_id = str(uuid.uuid4())
        return event_id, self._prefix + event_id.encode() + self._suffix


def ingest_headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "X-HOTMART-HOTTOK": HOTTOK}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for a relay config: tables, arrays of tables, scalars, scalar lists."""
    lines: list[str] = []
    _toml_table(data, (), lines)
    return "\n".join(lines) + "\n"


def _toml_table(data: dict[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    nested = []
    for key, value in data.items():
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in nested:
        sub = (*path, key)
        if isinstance(value, dict):
            lines.append(f"\n[{'.'.join(sub)}]")
            _toml_table(value, sub, lines)
        else:
            for item in value:
                lines.append(f"\n[[{'.'.join(sub)}]]")
                _toml_table(item, sub, lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def relay_config(
    workdir: Path, port: int, destinations: list[dict[str, Any]], **delivery: Any
) -> dict[str, Any]:
    """One producer, the fixture's affiliate with buyer data and the given destinations."""
    return {
        "server": {"host": HOST, "port": port, "path": INGEST_PATH},
        "storage": {"sqlite_path": str(workdir / "relay.sqlite3")},
        "delivery": {"timeout": "5s", "shutdown_grace": "2s", **delivery},
        "email": {
            "from": "Relay bench <relay@example.com>",
            "transport": "maildir",
            "maildir": str(workdir / "mail"),
        },
        "producers": [
            {
                "id": "bench",
                "hottok": HOTTOK,
                "affiliates": [
                    {
                        "code": AFFILIATE,
                        "name": "Lucía",
                        "buyer_data": True,
                        "destinations": destinations,
                    }
                ],
            }
        ],
    }


def write_relay_config(workdir: Path, raw: dict[str, Any]) -> Path:
    """Write the TOML and validate it here, so a bad config fails before any child starts."""
    path = workdir / "relay.toml"
    path.write_text(to_toml(raw), encoding="utf-8")
    load_config(path, {})
    return path


# -- the store, through its protocol (relay.store.Store) -------------------------------


@asynccontextmanager
async def relay_store(config_path: Path) -> AsyncIterator[Store]:
    """The store a relay config names, opened as the relay opens it."""
    async with open_store(load_config(config_path, {})) as store:
        yield store


async def seed_slips(config_path: Path, count: int) -> int:
    """Commit `count` OXXO slips, each with a fresh id, as ingest would: one delivery
    each, pending, for the config's one destination. The relay started next sends them.
    Returns the id of the first slip's delivery: the first one a drain claims."""
    config: Config = load_config(config_path, {})
    producer = config.producers[0]
    bodies = EventBodies()
    async with open_store(config) as store:
        now_ms = time.time_ns() // 1_000_000
        first = await store.ingest(_slip(producer.id, producer, bodies), now_ms)
        (first_id,) = await store.delivery_ids_of_event(first.event_row_id)
        for start in range(1, count, SEED_BATCH):
            batch = [
                _slip(producer.id, producer, bodies) for _ in range(min(SEED_BATCH, count - start))
            ]
            await asyncio.gather(*(store.ingest(item, now_ms) for item in batch))
    return first_id


def _slip(producer_id: str, producer: Any, bodies: EventBodies) -> NewEvent:
    event = parse_json_event(json.loads(bodies.next()[1]))
    return new_event(producer_id, event, decided_rows(decide(producer, event)))


async def settled_count(store: Store) -> tuple[int, int]:
    """(delivered, failed) deliveries so far."""
    counts = await store.count_by_status()
    return counts.get("delivered", 0), counts.get("failed", 0)


async def attempt_windows_ms(store: Store, limit: int) -> list[tuple[int, float]]:
    """(started_at_ms, latency_ms) of the first attempt of each of the newest `limit`
    deliveries, as the relay recorded them."""
    windows = []
    for row in await store.history(HistoryFilter(limit=limit)):
        detail = await store.delivery(row.id)
        if detail is not None and detail.attempts:
            first = detail.attempts[0]
            windows.append((first.started_at_ms, first.latency_ms))
    return windows


def tree_pids(pid: int) -> list[int]:
    """`pid` and every live descendant (Linux only): a multi-process relay is its tree."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *(grandchild for child in children for grandchild in tree_pids(int(child)))]


def tree_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` and every live descendant (Linux only)."""
    total = 0.0
    for one in tree_pids(pid) or [pid]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if one == pid:
                return None
            continue  # a child that ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S
    return total


async def attempt_window_ms(store: Store, first_id: int, tail: int) -> tuple[int, float]:
    """When a drain began (the first attempt of the first row, which the oldest-first
    claim takes first) and ended (the last answer among the newest `tail` rows): a few
    reads, however long the drain."""
    detail = await store.delivery(first_id)
    first = detail.attempts[0].started_at_ms if detail and detail.attempts else 0
    last = max(
        (started + latency for started, latency in await attempt_windows_ms(store, tail)),
        default=0.0,
    )
    return first, last


@dataclass
class Child:
    """A server running in its own process, so it never shares the load generator's loop."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def cpu_s(self) -> float | None:
        """User + system CPU seconds the child has used so far, with its live descendants:
        a multi-process `relay serve` works in its ingest and dispatcher processes."""
        return tree_cpu_s(self.process.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


AbstractChild = contextlib.AbstractAsyncContextManager[Child]


@asynccontextmanager
async def child_process(
    name: str,
    args: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    ready_url: str | None = None,
    ready_port: int | None = None,
) -> AsyncIterator[Child]:
    """Start `python args...`, wait until it answers, and always stop it afterwards.

    Ready means `ready_url` answers 200, or `ready_port` accepts and greets (SMTP).
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    child = Child(name, process, log_path)
    try:
        await _wait_ready(child, ready_url, ready_port)
        yield child
    finally:
        await _stop(child)


async def _wait_ready(child: Child, url: str | None, port: int | None) -> None:
    if url is None and port is None:
        return
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited at start:\n{child.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                if url is not None:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                elif port is not None and await _greets(port):
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{child.name} not ready after {READY_TIMEOUT_S:g}s:\n{child.log_tail()}")


async def _greets(port: int) -> bool:
    """True once something accepts on `port` and sends a first line (an SMTP banner)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return bool(await asyncio.wait_for(reader.readline(), timeout=1.0))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _stop(child: Child) -> None:
    """SIGTERM (relay drains on it), then SIGKILL if it lingers; never leave it running."""
    process = child.process
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            print(f"  ! {child.name} ignored SIGTERM for {STOP_TIMEOUT_S:g}s; killed it")
        process.wait()


def peer_process(kind: str, port: int, workdir: Path) -> AbstractChild:
    """A helper server from `bench.peers` (bare ingest, webhook sink, SMTP)."""
    smtp = kind == "smtp"
    return child_process(
        kind,
        ["-m", "bench.peers", kind, "--port", str(port)],
        cwd=ROOT,
        log_path=workdir / f"{kind}.log",
        ready_url=None if smtp else f"http://{HOST}:{port}/healthz",
        ready_port=port if smtp else None,
    )


def relay_process(config_path: Path, port: int, workdir: Path) -> AbstractChild:
    return child_process(
        "relay",
        ["-m", "relay", "--config", str(config_path), "serve"],
        cwd=workdir,
        log_path=workdir / "relay.log",
        ready_url=f"http://{HOST}:{port}/healthz",
    )


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Median, p95, p99 and worst of durations in seconds, as milliseconds."""
    if not samples_s:
        return {}
    ordered = sorted(samples_s)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(at(0.95), 2),
        "p99_ms": round(at(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
