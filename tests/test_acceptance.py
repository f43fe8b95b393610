"""Acceptance: the real `relay serve` process, stopped by signals, including kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import HOTTOK, SECRET, base_config_dict, fixture_json
from tests.peers import free_port, slow, status, wait_until, webhook_sink
from tests.test_cli import write_toml


@asynccontextmanager
async def relay_process(config_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "--config",
        str(config_path),
        "serve",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_healthy(port: int) -> None:
    async def healthy() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/healthz") as resp,
            ):
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(healthy, timeout_s=20)


def acceptance_config(tmp_path: Path, port: int, hook_url: str) -> Path:
    raw = base_config_dict(tmp_path)
    raw["server"] = {"port": port}
    raw["delivery"]["per_destination_concurrency"] = 8
    raw["delivery"]["retry_delays"] = ["50ms", "50ms", "50ms", "50ms"]
    raw["producers"][0]["affiliates"][0]["destinations"] = [
        {"kind": "webhook", "url": hook_url, "secret": SECRET}
    ]
    return write_toml(raw, tmp_path / "relay.toml")


async def test_sigterm_stops_serve_cleanly_with_exit_0(tmp_path: Path) -> None:
    port = free_port()
    async with webhook_sink() as sink:
        path = acceptance_config(tmp_path, port, sink.url("/hook"))
        async with relay_process(path) as proc:
            await wait_healthy(port)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_kill_9_during_attempts_loses_nothing(tmp_path: Path) -> None:
    """Kill the relay while attempts are in flight and events are arriving, then restart.

    Every event that got a 200 reaches the affiliate; only an attempt in flight at
    the kill may repeat, and a repeat carries the same webhook-id.
    """
    port = free_port()
    accepted: list[str] = []
    async with webhook_sink() as sink:
        sink.on("/hook", *[slow(0.05)] * 10_000)  # every attempt takes a while: some in flight
        path = acceptance_config(tmp_path, port, sink.url("/hook"))
        url = f"http://127.0.0.1:{port}/hotmart/webhook"

        async def post_events(count: int) -> None:
            async with aiohttp.ClientSession() as session:
                for _ in range(count):
                    payload = fixture_json("billet_printed_oxxo.json")
                    payload["id"] = str(uuid.uuid4())
                    try:
                        async with session.post(
                            url, json=payload, headers={"X-HOTMART-HOTTOK": HOTTOK}
                        ) as resp:
                            if resp.status == 200:
                                accepted.append(payload["id"])
                    except aiohttp.ClientError:
                        return  # the relay died under us: Hotmart would send it again

        async with relay_process(path) as proc:
            await wait_healthy(port)
            poster = asyncio.create_task(post_events(400))
            await wait_until(lambda: len(sink.hits) >= 20, timeout_s=30)
            proc.kill()  # SIGKILL: no cleanup, no drain
            await proc.wait()
            await poster
        killed_after = len(accepted)
        hits_at_kill = len(sink.hits)
        assert 0 < killed_after < 400

        async with relay_process(path) as proc:
            await wait_healthy(port)
            await post_events(20)

            def all_delivered() -> bool:
                return {json.loads(h.body)["event_id"] for h in sink.hits} >= set(accepted)

            await wait_until(all_delivered, timeout_s=60)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0

    rows = _deliveries(tmp_path / "relay.sqlite3")
    webhook_rows = [r for r in rows if r["channel"] == "webhook"]
    assert {r["status"] for r in webhook_rows} == {"delivered"}
    delivered_events = {r["event_id"] for r in webhook_rows}
    assert len(delivered_events) == len(webhook_rows)  # one delivery row per event
    # Every 200 is on disk. One more may be: committed, then killed before the 200 left
    # (the poster sends one at a time). Hotmart would resend it and hear "duplicate".
    assert len(accepted) <= len(webhook_rows) <= len(accepted) + 1
    per_id = Counter(h.headers["webhook-id"] for h in sink.hits)
    assert set(per_id) == {r["message_id"] for r in webhook_rows}
    repeats = {msg_id: n for msg_id, n in per_id.items() if n > 1}
    # Only what was in flight at the kill can repeat: bounded by the per-destination limit.
    assert sum(n - 1 for n in repeats.values()) <= 8, repeats
    for msg_id in repeats:
        bodies = {h.body for h in sink.hits if h.headers["webhook-id"] == msg_id}
        assert len(bodies) == 1  # the same message, byte for byte
    assert hits_at_kill >= 20


def _deliveries(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(r) for r in conn.execute("SELECT * FROM deliveries WHERE kind = 'notification'")
        ]
    finally:
        conn.close()


async def test_cli_replay_hands_its_retry_to_the_running_server(tmp_path: Path) -> None:
    """The server sleeps with nothing due; a CLI replay fails once and leaves a retry.
    SIGUSR1 from the CLI is what makes the server pick it up: there is no polling."""
    port = free_port()
    async with webhook_sink() as sink:
        sink.on("/hook", *[status(503)] * 3)  # then 200
        path = acceptance_config(tmp_path, port, sink.url("/hook"))
        text = path.read_text().replace('["50ms", "50ms", "50ms", "50ms"]', '["500ms"]')
        path.write_text(text)
        db = tmp_path / "relay.sqlite3"
        async with relay_process(path) as proc:
            await wait_healthy(port)
            async with aiohttp.ClientSession() as session:
                await session.post(
                    f"http://127.0.0.1:{port}/hotmart/webhook",
                    json=fixture_json("billet_printed_oxxo.json"),
                    headers={"X-HOTMART-HOTTOK": HOTTOK},
                )
            await wait_until(lambda: _status(db) == ("failed", 2), timeout_s=20)

            replay = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "relay",
                "--config",
                str(path),
                "replay",
                "1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, _ = await replay.communicate()
            assert replay.returncode == 1  # its own attempt failed: a retry is pending
            assert b"pending" in out
            # A fresh schedule after the replay, and the server makes the retry.
            await wait_until(lambda: _status(db) == ("delivered", 4), timeout_s=20)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    assert len({h.headers["webhook-id"] for h in sink.at("/hook")}) == 1


def _status(db: Path) -> tuple[str, int] | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT status, attempts FROM deliveries WHERE channel = 'webhook'"
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], row[1])
