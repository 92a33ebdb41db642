"""Dynamic batching: concurrent requests share calls, keys stay apart, failures stay isolated."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ragkit.server import DynamicBatcher, QueueFullError


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_items_share_a_batch() -> None:
    calls: list[tuple[str, list[int]]] = []

    def process(key: str, items: list[int]) -> list[int]:
        calls.append((key, items))
        return [i * 10 for i in items]

    async def main() -> list[int]:
        batcher: DynamicBatcher[str, int, int] = DynamicBatcher(process, max_batch=4, wait_s=0.2)
        await batcher.start()
        try:
            return list(await asyncio.gather(*(batcher.submit("k", i) for i in range(6))))
        finally:
            await batcher.stop()

    assert _run(main()) == [0, 10, 20, 30, 40, 50]
    assert [len(items) for _, items in calls] == [4, 2]


def test_different_keys_never_share_a_call() -> None:
    calls: list[tuple[str, list[int]]] = []

    def process(key: str, items: list[int]) -> list[str]:
        calls.append((key, items))
        return [f"{key}{i}" for i in items]

    async def main() -> list[str]:
        batcher: DynamicBatcher[str, int, str] = DynamicBatcher(process, max_batch=8, wait_s=0.1)
        await batcher.start()
        try:
            jobs = [batcher.submit("a" if i % 2 else "b", i) for i in range(4)]
            return list(await asyncio.gather(*jobs))
        finally:
            await batcher.stop()

    assert _run(main()) == ["b0", "a1", "b2", "a3"]
    assert sorted(calls) == [("a", [1, 3]), ("b", [0, 2])]


def test_one_bad_item_fails_alone() -> None:
    def process(key: str, items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("three is not allowed")
        return items

    async def main() -> list[Any]:
        batcher: DynamicBatcher[str, int, int] = DynamicBatcher(process, max_batch=8, wait_s=0.1)
        await batcher.start()
        try:
            jobs = [batcher.submit("k", i) for i in (1, 3, 5)]
            return list(await asyncio.gather(*jobs, return_exceptions=True))
        finally:
            await batcher.stop()

    one, three, five = _run(main())
    assert (one, five) == (1, 5)
    assert isinstance(three, ValueError)


def test_queue_bound_raises_queue_full() -> None:
    gate = threading.Event()

    def process(key: str, items: list[int]) -> list[int]:
        gate.wait(10)
        return items

    async def main() -> None:
        batcher: DynamicBatcher[str, int, int] = DynamicBatcher(
            process, max_batch=1, wait_s=0.0, max_queue=2
        )
        await batcher.start()
        try:
            running = asyncio.ensure_future(batcher.submit("k", 0))
            while batcher.waiting:  # wait until the first item is being processed
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            queued = [asyncio.ensure_future(batcher.submit("k", i)) for i in (1, 2)]
            await asyncio.sleep(0.05)
            assert batcher.waiting == 2
            with pytest.raises(QueueFullError):
                await batcher.submit("k", 3)
            gate.set()
            assert await running == 0
            assert [await q for q in queued] == [1, 2]
        finally:
            gate.set()
            await batcher.stop()

    _run(main())


def test_event_loop_stays_responsive_during_generation() -> None:
    gate = threading.Event()

    def process(key: str, items: list[int]) -> list[int]:
        gate.wait(10)  # a long generation, in the worker thread
        return items

    async def main() -> None:
        batcher: DynamicBatcher[str, int, int] = DynamicBatcher(process, max_batch=1, wait_s=0.0)
        await batcher.start()
        try:
            job = asyncio.ensure_future(batcher.submit("k", 7))
            ticks = 0
            for _ in range(5):  # the loop keeps running while process() blocks its thread
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 5 and not job.done()
            gate.set()
            assert await job == 7
        finally:
            gate.set()
            await batcher.stop()

    _run(main())


def test_server_batches_concurrent_queries(make_client: Any) -> None:
    client = make_client(batch_wait_ms=300, max_batch_size=8, rate_limit_per_minute=None)
    questions = ["capital of France?", "capital of Alsace?", "Rhine river?", "music and art?"]
    with ThreadPoolExecutor(len(questions)) as pool:
        responses = list(
            pool.map(lambda q: client.post("/v1/query", json={"question": q}), questions)
        )
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["question"] for r in responses] == questions
    health = client.get("/v1/health").json()
    assert health["batched_requests"] == 4
    assert health["largest_batch"] >= 2
    assert health["batches"] < 4
    # batched answers equal one-at-a-time answers (greedy decoding)
    alone = [client.post("/v1/query", json={"question": q}).json()["answer"] for q in questions]
    assert alone == [r.json()["answer"] for r in responses]


def test_batching_can_be_turned_off(make_client: Any) -> None:
    client = make_client(batching=False, rate_limit_per_minute=None)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda q: client.post("/v1/query", json={"question": q}), ["a?", "b?", "c?"]))
    assert client.get("/v1/health").json()["largest_batch"] == 1
