"""Dynamic batching: concurrent requests share one batched generation call.

Generating for 8 questions in one left-padded batch costs little more than generating for one,
so under concurrent load the server collects requests for a short window (``wait_s``) or until
``max_batch`` arrived, and hands them to ``process`` together. ``process`` runs in a dedicated
worker thread: the event loop keeps accepting requests (and answering health checks) while the
model works. Requests carry a key (their decoding options); only requests with the same key
share a call, because one call decodes with one set of options.

Memory is bounded: beyond ``max_queue`` waiting requests :meth:`DynamicBatcher.submit` raises
:class:`QueueFullError` at once (the server answers 503 with Retry-After) instead of queueing
without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("ragkit.server")


class QueueFullError(Exception):
    """Too many requests are already waiting; the client should retry later."""


@dataclass
class BatchStats:
    """Counters for /v1/health and the benchmark: how much batching actually happened."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_seconds: float = 0.0

    def record(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)
        self.busy_seconds += seconds


@dataclass
class _Job(Generic[K, T, R]):
    key: K
    item: T
    future: asyncio.Future[R] = field(repr=False)


class DynamicBatcher(Generic[K, T, R]):
    """Collect submitted items into batches and run ``process(key, items)`` in a worker thread.

    ``process`` must return one result per item, in order. If it raises for a batch of several
    items, each item is retried alone, so one bad request (say, a prompt too long for the
    context) fails only itself.
    """

    def __init__(
        self,
        process: Callable[[K, list[T]], Sequence[R]],
        *,
        max_batch: int = 16,
        wait_s: float = 0.01,
        max_queue: int = 64,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and wait_s >= 0")
        self.process = process
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job[K, T, R]] | None = None
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests accepted but not yet handed to the model."""
        return self._waiting

    async def start(self) -> None:
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragkit-batch")
        self._task = asyncio.create_task(self._run(), name="ragkit-batcher")

    async def stop(self) -> None:
        """Cancel the collector; requests still waiting fail with CancelledError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def submit(self, key: K, item: T) -> R:
        """Queue ``item`` and wait for its result; raise QueueFullError when the queue is full."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self._waiting >= self.max_queue:
            raise QueueFullError(f"{self._waiting} requests are already waiting")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting += 1
        self._queue.put_nowait(_Job(key, item, future))
        return await future

    async def _collect(self, first: _Job[K, T, R]) -> list[_Job[K, T, R]]:
        assert self._queue is not None
        jobs = [first]
        deadline = time.monotonic() + self.wait_s
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    jobs.append(self._queue.get_nowait())
                else:
                    jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return jobs

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            jobs = await self._collect(await self._queue.get())
            self._waiting -= len(jobs)
            groups: dict[K, list[_Job[K, T, R]]] = {}
            for job in jobs:
                if not job.future.done():  # the client gave up: skip its work
                    groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                await self._dispatch(key, group)

    async def _dispatch(self, key: K, group: list[_Job[K, T, R]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self.process, key, [j.item for j in group]
            )
            if len(results) != len(group):
                raise RuntimeError(f"process returned {len(results)} results for {len(group)}")
        except Exception as exc:
            if len(group) > 1:
                for job in group:
                    await self._dispatch(key, [job])
                return
            _settle(group[0].future, error=exc)
            return
        self.stats.record(len(group), time.perf_counter() - started)
        for job, result in zip(group, results, strict=True):
            _settle(job.future, result=result)


def _settle(
    future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
