"""What the processes of one `relay serve` share: wake-ups and which dispatchers run.

- Wake-ups: one unix datagram socket pair per dispatcher slot, made by the serving
  parent before any child starts and kept open by it for its whole life, so a child
  restarted on either side finds the same channel. An ingest process that commits an
  event sends one byte to every slot (coalesced to one send per event-loop turn); the
  dispatcher in that slot drains its socket and wakes. The kernel wakes it at once: no
  process polls. A full socket buffer already holds a wake-up, so a failed send is fine.
- Liveness: one byte per dispatcher slot in shared memory. The dispatcher process writes
  whether its supervised dispatcher runs; the parent clears the byte when the process
  exits, since a process killed with SIGKILL writes nothing. An ingest process's
  `/readyz` reads it: ready only while some dispatcher runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.context import SpawnContext
from typing import Any

from relay.supervisor import TaskState

WAKE_BYTE = b"w"
_DRAIN_BYTES = 4096


class WakeBus:
    """The socket pairs, held by the serving parent; children get one end each."""

    def __init__(self, slots: int) -> None:
        self._pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(slots)]
        for sender, _ in self._pairs:
            sender.setblocking(False)

    @property
    def senders(self) -> list[socket.socket]:
        return [sender for sender, _ in self._pairs]

    def receiver(self, slot: int) -> socket.socket:
        return self._pairs[slot][1]

    def close(self) -> None:
        for sender, receiver in self._pairs:
            sender.close()
            receiver.close()


def send_wake(senders: Sequence[socket.socket]) -> None:
    """One byte to every dispatcher slot, now."""
    for sender in senders:
        # Full: a wake-up is already waiting there. Any other failure: that slot's
        # dispatcher claims everything due when it (re)starts anyway.
        with contextlib.suppress(OSError):
            sender.send(WAKE_BYTE)


class WakeSender:
    """An ingest process's side: many commits in one loop turn cost one send per slot."""

    def __init__(self, senders: Sequence[socket.socket]) -> None:
        self._senders = list(senders)
        for sender in self._senders:
            sender.setblocking(False)
        self._queued = False

    def notify(self) -> None:
        if not self._queued:
            self._queued = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._queued = False
        send_wake(self._senders)


@contextlib.contextmanager
def wake_listener(receiver: socket.socket, wake: Callable[[], None]) -> Iterator[None]:
    """A dispatcher process's side: call `wake()` whenever bytes arrive on `receiver`."""
    receiver.setblocking(False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            while receiver.recv(_DRAIN_BYTES):
                pass
        wake()

    loop.add_reader(receiver.fileno(), readable)
    try:
        yield
    finally:
        loop.remove_reader(receiver.fileno())


class DispatcherBoard:
    """Which dispatcher slots run a live dispatcher, in memory every process of one
    serve shares (passed to each child as it is spawned)."""

    def __init__(self, context: SpawnContext, slots: int) -> None:
        self._flags: Any = context.RawArray("b", slots)  # ctypes: no static type to give

    def mark(self, slot: int, running: bool) -> None:
        self._flags[slot] = 1 if running else 0

    def any_running(self) -> bool:
        return any(self._flags[:])

    def reporter(self, slot: int) -> Callable[[TaskState], None]:
        """What the dispatcher's supervisor calls on each change of its state."""
        return lambda state: self.mark(slot, state == TaskState.RUNNING)


class RemoteDispatchers:
    """Readiness's view, in an ingest process, of the dispatchers in other processes."""

    def __init__(self, board: DispatcherBoard) -> None:
        self._board = board

    @property
    def state(self) -> TaskState:
        return TaskState.RUNNING if self._board.any_running() else TaskState.STOPPED
