"""Serve the app on its socket: bounds for slow and idle clients, and lines that say when
the relay listens and when, why and how fast it stopped.

One client must not hold connections without bound (500 idle or slow-drip sockets
stayed open for 70 s before these limits). Each phase of a request has one:

- before a complete request head, from connect or from the end of the last response:
  `server.idle_timeout`. aiohttp 3.14.4 and later start their keep-alive timer when a
  connection opens and close the connection if no complete head has arrived when it
  fires, so that one timer is both the header timeout and the keep-alive timeout
  (hence the floor on aiohttp in pyproject.toml);
- reading the body: `server.body_timeout`, in ingest (aiohttp has none);
- after a refused body: `LINGERING_S`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from relay.config import ServerConfig

log = logging.getLogger("relay.http")

# After a reply that did not read the whole body (408, 413), aiohttp reads and drops the
# rest for this long so the client sees the reply rather than a reset; then it closes.
LINGERING_S = 2.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _ParserRejections(logging.Filter):
    """aiohttp logs a request its parser refuses (400) at ERROR with a traceback.

    That is a client's mistake, not the relay's: say it in one warning line like every
    other rejection, with the exception's type but not its text, which quotes the bytes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            record.msg = "rejected %d from %s: malformed HTTP request (%s)"
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (exc.code, remote, type(exc).__name__)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def _server_logger() -> logging.Logger:
    """The logger the relay's HTTP server reports on: its own, so the filter touches no other."""
    logger = logging.getLogger("relay.http.server")
    if not any(isinstance(f, _ParserRejections) for f in logger.filters):
        logger.addFilter(_ParserRejections())
    return logger


def http_runner(
    app: web.Application, server: ServerConfig, *, shutdown_timeout_s: float
) -> web.AppRunner:
    """The runner `relay serve` uses, with the limits above; tests start the same one."""
    return web.AppRunner(
        app,
        access_log=None,  # ingest logs each event and each rejection itself
        logger=_server_logger(),
        keepalive_timeout=server.idle_timeout_s,
        lingering_time=LINGERING_S,
        shutdown_timeout=shutdown_timeout_s,
    )


def bound_urls(runner: web.AppRunner, path: str) -> list[str]:
    """Where the runner's sites really listen (port 0 becomes the port it got)."""
    urls = []
    for address in runner.addresses:
        host, port = address[0], address[1]
        shown = f"[{host}]" if ":" in host else host
        urls.append(f"http://{shown}:{port}{path}")
    return urls


async def serve_until_stopped(
    app: web.Application,
    server: ServerConfig,
    *,
    shutdown_timeout_s: float,
    sock: socket.socket | None = None,
) -> None:
    """Listen until SIGTERM or SIGINT, then stop taking requests and drain.

    On `sock`, when given: a listening socket the serving parent bound and handed down,
    shared by every ingest process.

    "listening" is logged only once the socket is bound, so a port already taken never
    looks like a running relay; the last line says which signal stopped it and how
    long draining took (requests, then attempts in flight, then the store).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s received while stopping: still draining", sig.name)
            return
        received.append(sig.name)
        stop.set()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    runner = http_runner(app, server, shutdown_timeout_s=shutdown_timeout_s)
    try:
        await runner.setup()
        site: web.BaseSite = (
            web.TCPSite(runner, server.host, server.port)
            if sock is None
            else web.SockSite(runner, sock)
        )
        await site.start()
        log.info("relay listening on %s", ", ".join(bound_urls(runner, server.path)))
        await stop.wait()
    except BaseException:  # the bind failed, or startup did: close what was opened
        await _close(runner)
        raise
    log.info("stopping on %s: draining requests and attempts in flight", received[0])
    started_s = loop.time()
    await _close(runner)
    log.info("relay stopped on %s; draining took %.2f s", received[0], loop.time() - started_s)


async def _close(runner: web.AppRunner) -> None:
    loop = asyncio.get_running_loop()
    try:
        await runner.cleanup()
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
