"""The HTTP server `relay serve` runs: slow and idle clients are cut off; it says when it
listens and when it stops. Raw sockets on loopback, the real app, a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.app import init_app
from relay.http_server import bound_urls, http_runner, serve_until_stopped
from tests.conftest import HOTTOK, build_config, fixture_json
from tests.peers import free_port, wait_until
from tests.test_cli import write_toml

PATH = "/hotmart/webhook"
# Sockets of each misbehaving kind, all at once; 3 x 40 stays under the listen backlog (128),
# so no connection is left half-open in the kernel, where the server could not close it.
CLIENTS_PER_KIND = 40
# Generous on purpose: the property is "closed, not held", on a shared, loaded machine.
ALL_CLOSED_WITHIN_S = 30.0


@asynccontextmanager
async def relay_http(config_dict: dict[str, Any], tmp_path: Path) -> AsyncIterator[int]:
    """The real app behind the runner `relay serve` uses, on a free port."""
    config = build_config(config_dict, tmp_path)
    app = init_app(config)
    runner = http_runner(app, config.server, shutdown_timeout_s=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        (url,) = bound_urls(runner, PATH)
        assert url.startswith("http://127.0.0.1:")
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def held_open_s(port: int, send: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> float:
    """How long the server keeps a connection whose client behaves like `send`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    sender = asyncio.create_task(send(writer))
    try:
        while await reader.read(65536):  # a 408 may come first; the close is what counts
            pass
    except ConnectionError:
        pass
    finally:
        sender.cancel()
        writer.close()
    return time.monotonic() - started


async def idle(writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # connects, then says nothing


async def drip(writer: asyncio.StreamWriter, first: bytes, each: bytes) -> None:
    writer.write(first)
    while True:
        await asyncio.sleep(0.05)
        writer.write(each)
        await writer.drain()


async def header_drip(writer: asyncio.StreamWriter) -> None:
    """Slowloris: a request head that never ends."""
    await drip(writer, f"POST {PATH} HTTP/1.1\r\nHost: relay\r\n".encode(), b"X-a: b\r\n")


async def body_drip(writer: asyncio.StreamWriter) -> None:
    """A valid head, then a body one byte at a time that never reaches its length."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        f"X-HOTMART-HOTTOK: {HOTTOK}\r\nContent-Length: 100000\r\n\r\n"
    )
    await drip(writer, head.encode(), b" ")


async def test_idle_and_slow_clients_are_closed_while_normal_requests_go_through(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config_dict["server"] = {"idle_timeout": "500ms", "body_timeout": "500ms"}
    async with relay_http(config_dict, tmp_path) as port:
        kinds = (idle, header_drip, body_drip)
        clients = [
            asyncio.create_task(held_open_s(port, kind))
            for kind in kinds
            for _ in range(CLIENTS_PER_KIND)
        ]
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(0.1)  # every misbehaving client is connected by now
            resp = await session.post(
                f"http://127.0.0.1:{port}{PATH}",
                json=fixture_json("billet_printed_oxxo.json"),
                headers={"X-HOTMART-HOTTOK": HOTTOK},
            )
            assert resp.status == 200
            assert (await resp.json())["status"] == "accepted"
        held = await asyncio.wait_for(asyncio.gather(*clients), timeout=ALL_CLOSED_WITHIN_S)
    assert len(held) == len(kinds) * CLIENTS_PER_KIND  # every one was closed by the server


@asynccontextmanager
async def serve_process(config_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "serve",
        "--config",
        str(config_path),
        "--log-format",
        "json",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def next_line_matching(proc: asyncio.subprocess.Process, text: str) -> dict[str, Any]:
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        assert line, f"serve exited before logging {text!r}"
        entry: dict[str, Any] = json.loads(line)  # --log-format json: every line is an object
        if text in entry["message"]:
            return entry


async def test_serve_says_listening_once_bound_and_how_it_stopped(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    config_dict["server"] = {"port": port}
    async with serve_process(write_toml(config_dict, tmp_path / "relay.toml")) as proc:
        entry = await next_line_matching(proc, "listening on")
        assert f"http://127.0.0.1:{port}{PATH}" in entry["message"]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # bound before it said so
        proc.send_signal(signal.SIGTERM)
        stopping = await next_line_matching(proc, "stopping")
        assert "SIGTERM" in stopping["message"]
        stopped = await next_line_matching(proc, "stopped")
        assert "SIGTERM" in stopped["message"] and " s" in stopped["message"]
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


@pytest.mark.parametrize(("setting", "loop"), [("auto", "uvloop"), ("asyncio", "asyncio")])
async def test_serve_takes_and_answers_a_post_on_either_event_loop(
    config_dict: dict[str, Any], tmp_path: Path, setting: str, loop: str
) -> None:
    # uvloop comes with the [test] extra, as with [fast]: "auto" picks it when installed.
    port = free_port()
    config_dict["server"] = {"port": port, "event_loop": setting}
    async with serve_process(write_toml(config_dict, tmp_path / "relay.toml")) as proc:
        assert (await next_line_matching(proc, "event loop:"))["message"] == f"event loop: {loop}"
        await next_line_matching(proc, "listening on")
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": "application/json", "X-HOTMART-HOTTOK": HOTTOK}
            url = f"http://127.0.0.1:{port}{PATH}"
            body = fixture_json("billet_printed_oxxo.json")
            async with session.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "accepted"
        proc.send_signal(signal.SIGTERM)
        await next_line_matching(proc, "stopped")
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_serve_does_not_claim_to_listen_when_the_port_is_taken(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config_dict["server"] = {"port": taken.getsockname()[1]}
        async with serve_process(write_toml(config_dict, tmp_path / "relay.toml")) as proc:
            _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    text = err.decode()
    assert "cannot serve" in text
    assert "listening" not in text


async def test_a_request_that_is_not_http_is_one_warning_line_not_a_traceback(
    config_dict: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with relay_http(config_dict, tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {PATH} HTTP/1.1\r\nno colon in this header\r\n\r\n".encode())
        reply = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
    assert reply.split(b" ")[1] == b"400"
    rejected = [r for r in caplog.records if "rejected 400" in r.getMessage()]
    assert len(rejected) == 1, [r.getMessage() for r in caplog.records]
    assert rejected[0].levelno == logging.WARNING
    assert "127.0.0.1" in rejected[0].getMessage()
    assert "malformed HTTP request" in rejected[0].getMessage()
    assert rejected[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def in_process_app(config_dict: dict[str, Any], tmp_path: Path) -> tuple[web.Application, Any]:
    config = build_config(config_dict, tmp_path)
    app = init_app(config)
    return app, config


async def test_serve_until_stopped_drains_on_a_signal_in_this_process(
    config_dict: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.http")
    config_dict["server"] = {"port": free_port()}
    app, config = in_process_app(config_dict, tmp_path)
    serving = asyncio.create_task(serve_until_stopped(app, config.server, shutdown_timeout_s=1.0))

    def logged(text: str) -> bool:
        return any(text in record.getMessage() for record in caplog.records)

    await wait_until(lambda: logged("listening on"), timeout_s=30)
    os.kill(os.getpid(), signal.SIGINT)  # the loop's handler is installed before that line
    await asyncio.wait_for(serving, timeout=30)
    assert logged("relay stopped on SIGINT; draining took")


async def test_serve_until_stopped_raises_when_the_port_is_taken_and_cleans_up(
    config_dict: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.http")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config_dict["server"] = {"port": taken.getsockname()[1]}
        app, config = in_process_app(config_dict, tmp_path)
        with pytest.raises(OSError, match="address already in use"):
            await serve_until_stopped(app, config.server, shutdown_timeout_s=1.0)
    assert not any("listening" in r.getMessage() for r in caplog.records)
    loop = asyncio.get_running_loop()
    assert loop.remove_signal_handler(signal.SIGTERM) is False  # none left behind


def test_without_uvloop_auto_means_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.event_loop import choose_loop

    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` meets uninstalled
    name, factory = choose_loop("auto")
    assert name == "asyncio"
    loop = factory()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_auto_picks_uvloop_where_it_is_installed_and_asyncio_picks_asyncio() -> None:
    from relay.event_loop import choose_loop

    for setting, expected in (("auto", "uvloop"), ("asyncio", "asyncio")):
        name, factory = choose_loop(setting)
        loop = factory()
        try:
            assert name == expected
            assert type(loop).__module__.split(".")[0] == expected
        finally:
            loop.close()
