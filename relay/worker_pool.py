"""The serving parent of a multi-process `relay serve`: it binds the port, spawns the
ingest and dispatcher processes (relay.worker_children), restarts any that dies, and on
SIGTERM or SIGINT drains them all and returns.

The parent holds what must outlive any one child: the single-instance lock (taken by
relay.service before this runs, with the parent's pid in it, so `replay` and
`send-test` still signal here), the listening socket every ingest process accepts on,
the wake-up sockets and the dispatcher board (relay.cross_process). A CLI's SIGUSR1 to
the parent becomes a wake-up of every dispatcher process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext, SpawnProcess

from relay.config import Config, ServerConfig
from relay.cross_process import DispatcherBoard, WakeBus, send_wake
from relay.instance import WAKE_SIGNAL
from relay.metrics_peers import peer_address
from relay.supervisor import HEALTHY_RUN_S, RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_MIN_S
from relay.worker_children import (
    DispatcherChild,
    IngestChild,
    Logging,
    dispatcher_main,
    ingest_main,
)

log = logging.getLogger("relay.workers")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# aiohttp's own default for the sockets it binds.
LISTEN_BACKLOG = 128
# After shutdown_grace, a child still draining gets this long more before SIGKILL: its
# HTTP drain and its attempts' drain each take up to shutdown_grace.
STOP_MARGIN_S = 5.0


@dataclass
class _Slot:
    """One child's place: what starts it, and how it has fared."""

    name: str  # "ingest 0", "dispatcher 1": what the log says
    target: Callable[[], SpawnProcess]
    on_exit: Callable[[], None] = lambda: None
    process: SpawnProcess | None = None
    started_at_s: float = 0.0
    backoff_s: float = RESTART_BACKOFF_MIN_S
    restart: asyncio.TimerHandle | None = field(default=None, repr=False)


def bind(server: ServerConfig) -> socket.socket:
    """The listening socket, bound here so a port already taken fails the parent at once
    and port 0 means one port for every ingest process."""
    family, kind, proto, _, address = socket.getaddrinfo(
        server.host, server.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def exit_words(exitcode: int | None) -> str:
    """How a child ended, as the log says it: its exit code, or the signal that killed it."""
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class WorkerPool:
    """Runs `server.workers` ingest and `delivery.workers` dispatcher processes."""

    def __init__(
        self,
        config: Config,
        logs: Logging,
        *,
        backoff_min_s: float = RESTART_BACKOFF_MIN_S,
        backoff_max_s: float = RESTART_BACKOFF_MAX_S,
    ) -> None:
        self._config = config
        self._logs = logs
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._context: SpawnContext = multiprocessing.get_context("spawn")
        self._stop = asyncio.Event()
        self._stopped_by = ""
        self._alive = 0
        self._all_exited = asyncio.Event()
        self._addresses: dict[str, str] = {}  # each child's metrics socket, by its name

    async def run(self, listening: socket.socket) -> None:
        """Serve on `listening` until SIGTERM or SIGINT; then drain every child."""
        config = self._config
        loop = asyncio.get_running_loop()
        bus = WakeBus(config.delivery.workers)
        board = DispatcherBoard(self._context, config.delivery.workers)
        names = [f"ingest {n}" for n in range(config.server.workers)]
        names += [f"dispatcher {n}" for n in range(config.delivery.workers)]
        self._addresses = {name: peer_address(os.getpid(), name) for name in names}
        slots = [self._ingest_slot(n, listening, bus, board) for n in range(config.server.workers)]
        slots += [self._dispatcher_slot(n, bus, board) for n in range(config.delivery.workers)]
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(WAKE_SIGNAL, send_wake, bus.senders)
        try:
            for slot in slots:
                self._start(slot)
            log.info(
                "relay serving with %d ingest and %d dispatcher processes",
                config.server.workers,
                config.delivery.workers,
            )
            await self._stop.wait()
            log.info("stopping on %s: draining every process", self._stopped_by)
            started_s = loop.time()
            await self._drain(slots, listening)
            log.info(
                "relay stopped on %s; draining took %.2f s",
                self._stopped_by,
                loop.time() - started_s,
            )
        finally:
            for sig in (*_STOP_SIGNALS, WAKE_SIGNAL):
                loop.remove_signal_handler(sig)
            bus.close()

    def stop(self, why: str = "request") -> None:
        if not self._stop.is_set():
            self._stopped_by = why
            self._stop.set()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.info("%s received while stopping: still draining", sig.name)
        self.stop(sig.name)

    def _ingest_slot(
        self, n: int, listening: socket.socket, bus: WakeBus, board: DispatcherBoard
    ) -> _Slot:
        name = f"ingest {n}"
        own = self._addresses[name]
        peers = tuple(address for address in self._addresses.values() if address != own)
        child = IngestChild(self._config, self._logs, listening, bus.senders, board, own, peers)
        return _Slot(
            name, lambda: self._spawn(name, ingest_main, child), backoff_s=self._backoff_min_s
        )

    def _dispatcher_slot(self, n: int, bus: WakeBus, board: DispatcherBoard) -> _Slot:
        name = f"dispatcher {n}"
        address = self._addresses[name]
        child = DispatcherChild(self._config, self._logs, n, bus.receiver(n), board, address)
        # A process killed by SIGKILL cannot say it stopped: the parent says it for it.
        return _Slot(
            name,
            lambda: self._spawn(name, dispatcher_main, child),
            on_exit=lambda: board.mark(n, running=False),
            backoff_s=self._backoff_min_s,
        )

    def _spawn(self, name: str, main: Callable[..., None], child: object) -> SpawnProcess:
        process = self._context.Process(
            target=main, args=(child,), name=f"relay {name}", daemon=False
        )
        process.start()
        return process

    def _start(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stop.is_set():
            return
        loop = asyncio.get_running_loop()
        try:
            process = slot.target()
        except OSError as exc:  # out of processes or descriptors: try again later
            log.error("%s process could not start (%s)", slot.name, type(exc).__name__)
            self._schedule_restart(slot)
            return
        slot.process = process
        slot.started_at_s = time.monotonic()
        self._alive += 1
        self._all_exited.clear()
        loop.add_reader(process.sentinel, self._exited, slot, process)
        log.info("%s process started (pid %s)", slot.name, process.pid)

    def _exited(self, slot: _Slot, process: SpawnProcess) -> None:
        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join()  # its sentinel says it ended: this only reaps it
        slot.process = None
        slot.on_exit()
        self._alive -= 1
        if self._alive == 0:
            self._all_exited.set()
        how = exit_words(process.exitcode)
        if self._stop.is_set():
            log.info("%s process (pid %s) %s", slot.name, process.pid, how)
            return
        if time.monotonic() - slot.started_at_s >= HEALTHY_RUN_S:
            slot.backoff_s = self._backoff_min_s  # a crash after a long healthy run
        log.error(
            "%s process (pid %s) %s; restarting in %.1fs",
            slot.name,
            process.pid,
            how,
            slot.backoff_s,
        )
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        slot.restart = loop.call_later(slot.backoff_s, self._start, slot)
        slot.backoff_s = min(slot.backoff_s * 2, self._backoff_max_s)

    async def _drain(self, slots: list[_Slot], listening: socket.socket) -> None:
        """SIGTERM every child, wait while they drain, SIGKILL any that outlasts that."""
        # The children's copies of the socket keep it open; ours would keep taking
        # connections into the backlog after they stopped accepting.
        listening.close()
        for slot in slots:
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
            if slot.process is not None:
                slot.process.terminate()
        if self._alive == 0:
            return
        limit_s = self._config.delivery.shutdown_grace_s * 2 + STOP_MARGIN_S
        try:
            await asyncio.wait_for(self._all_exited.wait(), limit_s)
        except TimeoutError:
            for slot in slots:
                if slot.process is not None:
                    log.error(
                        "%s process did not stop within %.0fs: killing it", slot.name, limit_s
                    )
                    slot.process.kill()
            await self._all_exited.wait()
