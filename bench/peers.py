"""Baseline servers the benchmarks run as child processes: `python -m bench.peers KIND`.

- `bare`: an aiohttp app that reads the body and answers relay's 200, doing nothing else;
  the ceiling ingest is measured against.
- `sink`: an affiliate's webhook that answers 200 "ok" to anything.
- `smtp`: aiosmtpd with a handler that accepts every message and keeps none.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from aiohttp import web

from bench.common import HOST, INGEST_PATH

ACCEPTED = {"status": "accepted"}


async def accept_event(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(ACCEPTED)


async def accept_anything(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def bare_app() -> web.Application:
    app = web.Application()
    app.router.add_post(INGEST_PATH, accept_event)
    app.router.add_get("/healthz", healthz)
    return app


def sink_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", accept_anything)
    return app


class AcceptAll:
    """aiosmtpd handler: 250 to every DATA, nothing stored."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def run_smtp(port: int) -> None:
    from aiosmtpd.controller import Controller

    # A fixed server_hostname skips aiosmtpd's FQDN lookup, which can stall on a bare host.
    controller = Controller(AcceptAll(), hostname=HOST, port=port, server_hostname="bench.local")
    controller.start()
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("kind", choices=["bare", "sink", "smtp"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "smtp":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        run_smtp(args.port)
        return
    app = bare_app() if args.kind == "bare" else sink_app()
    web.run_app(app, host=HOST, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
