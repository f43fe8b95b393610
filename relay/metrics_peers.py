"""One `/metrics` for a multi-process serve: each process's counts, added up at scrape time.

Every child of the serving parent answers, on a unix socket of its own, with a snapshot
of its counts (`Metrics.snapshot`); the ingest process that takes a scrape asks all the
others and adds theirs to its own, so the figures are the whole relay's, as of the
scrape, with nothing written anywhere in between. The sockets are in Linux's abstract
namespace, named by the parent's pid and the child's slot: nothing to clean up after a
child killed with SIGKILL, and a restarted child takes its name again. Only a process of
the relay's own user is answered (SO_PEERCRED), so `admin.metrics_token` still guards
the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Sequence

log = logging.getLogger("relay.metrics")
# A peer that has not answered within this is left out of the scrape, and counted as
# missing: well inside the scrape's wait for the store's gauges.
PEER_TIMEOUT_S = 0.5
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_address(parent_pid: int, name: str) -> str:
    """The abstract socket name of the child called `name` ("dispatcher 0")."""
    return f"\0relay-{parent_pid}-metrics-{name.replace(' ', '-')}"


def _same_user(sock: socket.socket) -> bool:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    _, uid, _ = _CREDENTIALS.unpack(raw)
    return bool(uid == os.getuid())


@contextlib.asynccontextmanager
async def answering(address: str, snapshot: Callable[[], bytes]) -> AsyncIterator[None]:
    """Answer every connection to `address` with `snapshot()`, for the life of the block."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            if sock is not None and _same_user(sock):
                writer.write(snapshot())
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # A socket made here, not `path=`: uvloop refuses an abstract name given as a path.
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(address)
        listening.listen()
        listening.setblocking(False)
        server = await asyncio.start_unix_server(answer, sock=listening)
    except BaseException:
        listening.close()
        raise
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def _ask(address: str) -> bytes:
    # As in `answering`: a socket of our own, connected, since uvloop refuses the name.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, address)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def gather(
    addresses: Sequence[str], timeout_s: float = PEER_TIMEOUT_S
) -> tuple[list[bytes], int]:
    """Every peer's snapshot that came in time, and how many did not (a child being
    restarted, or stuck)."""

    async def one(address: str) -> bytes | None:
        try:
            return await asyncio.wait_for(_ask(address), timeout_s)
        except (OSError, TimeoutError) as exc:
            log.debug("metrics: a process did not answer (%s)", type(exc).__name__)
            return None

    answers = await asyncio.gather(*(one(address) for address in addresses))
    snapshots = [answer for answer in answers if answer]
    return snapshots, len(addresses) - len(snapshots)
