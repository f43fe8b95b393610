"""Batch concurrent writes into one transaction: one commit (one fsync) serves many callers.

Callers `submit` an item and await its own result. One writer task takes whatever
has queued while the previous batch was committing, so under load batches grow by
themselves and when idle a lone item is written at once, with no timer.

One bad item must not fail its neighbours: a write that finds item N cannot be written
raises `ItemFailed(N, error)`; that item alone gets the error and the batch is written
again without it. Any other failure (the store as a whole) fails every caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_BATCH = 256  # bounds one transaction's duration, and so the wait of the next batch


class ItemFailed(Exception):
    """Item `index` of a batch cannot be written; `error` is what its caller hears."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"batch item {index}: {type(error).__name__}")
        self.index = index
        self.error = error


class GroupCommit(Generic[Item, Result]):
    def __init__(self, write: Callable[[Sequence[Item]], Awaitable[list[Result]]]) -> None:
        self._write = write
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._writer(), name="group-commit")
        try:
            yield
        finally:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            for _, future in self._pending:
                if not future.done():
                    future.set_exception(RuntimeError("store closed before commit"))
            self._pending.clear()

    async def submit(self, item: Item) -> Result:
        if self._task is None:
            raise RuntimeError("the store is not open")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        # A caller that goes away does not cancel the batch: the commit still happens.
        return await asyncio.shield(future)

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        while batch:
            try:
                results = await self._write([item for item, _ in batch])
            except asyncio.CancelledError:
                _fail(batch, RuntimeError("store closed during commit"))
                raise
            except ItemFailed as failed:
                if not 0 <= failed.index < len(batch):  # a bug in the write: blame no one item
                    _fail(batch, failed.error)
                    return
                # That item alone hears of it; the rest are written again without it.
                _, future = batch.pop(failed.index)
                _fail([(None, future)], failed.error)
                continue
            except Exception as exc:  # the store itself: every caller hears it (503)
                _fail(batch, exc)
                return
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            return


def _fail(batch: Sequence[tuple[object, asyncio.Future[Result]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
