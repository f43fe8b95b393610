"""The acceptance suite's peers, each in a process of its own: `python -m tests.acceptance.peers`.

`sink` is an affiliate's webhook receiver: plain HTTP, HTTPS with a certificate no one
trusts, and a socket that accepts and never answers. `smtp` is an aiosmtpd server.
Both are scripted and read over a small JSON control API (`/_control/...`), and both
write their ports to `--ready-file` once they listen. Running apart from the test and
from the relay, they stay up while the relay is killed, and the relay's memory is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

CONTROL = "/_control"
HOLD_MAX_S = 60.0  # a held request is answered after this even if nobody releases it
DRIP_MAX_CHUNKS = 10_000
BIG_CHUNK_BYTES = 64 * 1024


@dataclass
class Hit:
    """One request as the sink saw it; times are time.monotonic(), shared by every process."""

    seq: int
    path: str
    headers: dict[str, str]
    body: str
    arrived: float
    finished: float | None = None
    ending: str = ""  # answered | client gone | reset | failed: ...
    status: int | None = None
    sent_bytes: int = 0


@dataclass
class Script:
    replies: deque[dict[str, Any]] = field(default_factory=deque)
    default: dict[str, Any] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class Sink:
    """Records every request; answers each path as its script says (default: 200 "ok")."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.scripts: dict[str, Script] = {}
        self.hang_accepted: list[float] = []
        self.hang_closed: list[float] = []
        self._hang_writers: list[asyncio.StreamWriter] = []

    def script(self, path: str) -> Script:
        return self.scripts.setdefault(path, Script())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        hit = Hit(
            seq=len(self.hits),
            path=request.path,
            headers=dict(request.headers),
            body=body.decode("utf-8", errors="replace"),
            arrived=time.monotonic(),
        )
        self.hits.append(hit)
        script = self.script(request.path)
        spec = script.replies.popleft() if script.replies else script.default
        try:
            response = await self._answer(request, spec, script, hit)
            hit.ending = hit.ending or "answered"
            return response
        except asyncio.CancelledError:
            hit.ending = "client gone"
            raise
        except (ConnectionError, OSError) as exc:
            hit.ending = f"failed: {type(exc).__name__}"
            raise
        finally:
            hit.finished = time.monotonic()

    async def _answer(
        self, request: web.Request, spec: dict[str, Any], script: Script, hit: Hit
    ) -> web.StreamResponse:
        if spec.get("hold"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(script.release.wait(), spec.get("hold_max_s", HOLD_MAX_S))
        if spec.get("delay_s"):
            await asyncio.sleep(spec["delay_s"])
        status = int(spec.get("status", 200))
        headers = spec.get("headers", {})
        hit.status = status
        if spec.get("reset"):
            _reset(request)
            hit.ending = "reset"
            return web.Response(status=status)  # never sent: the connection is gone
        if "drip" in spec or "big_bytes" in spec:
            return await self._stream(request, spec, status, headers, hit)
        body = bytes.fromhex(spec["body_hex"]) if "body_hex" in spec else spec.get("body", "ok")
        if isinstance(body, str):
            body = body.encode()
        hit.sent_bytes = len(body)
        return web.Response(status=status, body=body, headers=headers)

    async def _stream(
        self,
        request: web.Request,
        spec: dict[str, Any],
        status: int,
        headers: dict[str, str],
        hit: Hit,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=headers)
        if "big_bytes" in spec:
            response.content_length = int(spec["big_bytes"])
        await response.prepare(request)
        if "big_bytes" in spec:
            chunk = b"x" * BIG_CHUNK_BYTES
            left = int(spec["big_bytes"])
            while left > 0:
                piece = chunk[: min(left, BIG_CHUNK_BYTES)]
                await response.write(piece)
                hit.sent_bytes += len(piece)
                left -= len(piece)
        else:
            drip = spec["drip"]
            for _ in range(min(int(drip.get("chunks", DRIP_MAX_CHUNKS)), DRIP_MAX_CHUNKS)):
                await response.write(drip.get("chunk", ".").encode())
                hit.sent_bytes += 1
                await asyncio.sleep(float(drip.get("interval_s", 0.1)))
        await response.write_eof()
        return response

    async def hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept and never answer; note when the client gives up."""
        self.hang_accepted.append(time.monotonic())
        self._hang_writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        self.hang_closed.append(time.monotonic())
        writer.close()

    # -- control API ------------------------------------------------------------------

    async def control_script(self, request: web.Request) -> web.Response:
        data = await request.json()
        script = self.script(data["path"])
        script.replies.extend(data.get("replies", []))
        if "default" in data:
            script.default = data["default"]
        script.release.clear()
        return web.json_response({"ok": True})

    async def control_release(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.script(data["path"]).release.set()
        return web.json_response({"ok": True})

    async def control_hits(self, request: web.Request) -> web.Response:
        path = request.query.get("path")
        hits = [asdict(h) for h in self.hits if path is None or h.path == path]
        return web.json_response(hits)

    async def control_hang(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"accepted": len(self.hang_accepted), "closed": len(self.hang_closed)}
        )


def _reset(request: web.Request) -> None:
    """Close with a TCP RST, as a crashed receiver or a middlebox does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def sink_app(sink: Sink) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post(f"{CONTROL}/script", sink.control_script)
    app.router.add_post(f"{CONTROL}/release", sink.control_release)
    app.router.add_get(f"{CONTROL}/hits", sink.control_hits)
    app.router.add_get(f"{CONTROL}/hang", sink.control_hang)
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    return app


async def run_sink(ready_file: Path) -> None:
    sink = Sink()
    # Cancelled handlers tell us when the client went away: the end of its attempt.
    runner = web.AppRunner(sink_app(sink), access_log=None, handler_cancellation=True)
    await runner.setup()
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    await plain.start()
    untrusted = trustme.CA()  # the relay trusts the system's CAs only: this one it refuses
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    untrusted.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await tls.start()
    hang = await asyncio.start_server(sink.hang, "127.0.0.1", 0)
    ports = [address[1] for address in runner.addresses]
    write_ready(
        ready_file,
        {"http": ports[0], "tls": ports[1], "hang": hang.sockets[0].getsockname()[1]},
    )
    try:
        await until_terminated()
    finally:
        hang.close()
        await runner.cleanup()


# -- process plumbing ---------------------------------------------------------------------


def write_ready(path: Path, ports: dict[str, int]) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(ports))
    os.replace(staging, path)  # the test never reads half a file


async def until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.acceptance.peers")
    parser.add_argument("kind", choices=["sink", "smtp"])
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="smtp: the port to listen on")
    parser.add_argument(
        "--mode",
        default="plain",
        choices=["plain", "starttls-refused", "starttls-untrusted", "auth-refused"],
    )
    args = parser.parse_args()
    if args.kind == "sink":
        asyncio.run(run_sink(args.ready_file))
    else:
        from tests.acceptance.smtp_peer import run_smtp  # the SMTP peer's own module

        asyncio.run(run_smtp(args.ready_file, args.port, args.mode))


if __name__ == "__main__":
    main()
