"""Concurrent single-query encodes become one batch, with no waiting window.

A server answers searches in worker threads; each would run its own batch-of-one forward pass,
and on a small CPU those passes compete for the same cores. Here the first caller runs a pass
for everything queued at that moment; callers arriving meanwhile queue up, and when the pass
ends one of them runs the next pass for all of them. A lone caller never waits for company, so
single-query latency is unchanged; under load, passes grow to the number of concurrent callers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

from ragkit.embedding.backends.base import Vectors


class QueryCoalescer:
    """Runs ``encode_many(texts) -> (n, dim)`` for whatever queries are waiting together."""

    def __init__(self, encode_many: Callable[[list[str]], Vectors]) -> None:
        self._encode_many = encode_many
        self._cond = threading.Condition()
        self._pending: list[tuple[str, Future[Vectors]]] = []
        self._busy = False
        self.batches = 0
        self.largest = 0

    def encode(self, text: str) -> Vectors:
        """The (1, dim) vector of ``text``, computed in a pass shared with concurrent callers."""
        future: Future[Vectors] = Future()
        with self._cond:
            self._pending.append((text, future))
            while self._busy and not future.done():
                self._cond.wait()
            if future.done():
                return future.result()
            self._busy = True
            batch, self._pending = self._pending, []
        try:
            vectors = self._encode_many([t for t, _ in batch])
            for row, (_, waiting) in enumerate(batch):
                waiting.set_result(vectors[row : row + 1])
        except BaseException as exc:
            for _, waiting in batch:
                if not waiting.done():
                    waiting.set_exception(exc)
        finally:
            with self._cond:
                self.batches += 1
                self.largest = max(self.largest, len(batch))
                self._busy = False
                self._cond.notify_all()
        return future.result()
