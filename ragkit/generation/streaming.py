"""Streaming: text pieces handed to the caller while the model is still generating.

The model runs in a worker thread and pushes token ids into a queue (transformers calls a
streamer's ``put`` once per step); the consumer's thread decodes the growing completion and
yields only text that can no longer change: a tail that might become a stop string, or an
incomplete multi-byte character, is held back until the next token settles it. Consequently the
pieces concatenate to exactly the text the non-streaming path returns for the same prompt.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ragkit.generation.results import GenerationResult
from ragkit.generation.stopping import find_stop, held_back

_END = object()


class QueueStreamer:
    """A transformers streamer that forwards generated token ids to a queue.

    ``generate`` first passes the prompt, then one tensor of new ids per step; the prompt is
    dropped. Only batch size 1 is supported (streaming is for one interactive answer).
    """

    def __init__(self, sink: queue.Queue[Any]) -> None:
        self._sink = sink
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._sink.put([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        """Nothing to do: the worker signals the end after ``generate`` returns."""


_LIVE_STREAMS: weakref.WeakSet[TextStream] = weakref.WeakSet()


@atexit.register
def _stop_live_streams() -> None:
    """Cancel and join streams abandoned mid-generation before the interpreter shuts down.

    A worker thread still inside a torch kernel while Python finalises aborts the process
    ("terminate called without an active exception"); stopping it first avoids that.
    """
    for stream in list(_LIVE_STREAMS):
        stream.close()


class TextStream(Iterator[str]):
    """Iterator of text pieces; after exhaustion :attr:`result` holds the full result.

    ``run(streamer, is_cancelled)`` performs the generation (in a worker thread, started on the
    first ``next``). ``finish(token_ids)`` turns the generated ids into the same
    :class:`GenerationResult` the batch path would produce. Abandoning the iterator early
    (``close()``, leaving a ``with`` block or dropping it) cancels the worker at its next step.
    """

    def __init__(
        self,
        run: Callable[[QueueStreamer, Callable[[], bool]], None],
        decode: Callable[[list[int]], str],
        finish: Callable[[list[int]], GenerationResult],
        stops: Sequence[str],
        terminators: frozenset[int],
    ) -> None:
        self._run = run
        self._decode = decode
        self._finish = finish
        self._stops = tuple(stops)
        self._terminators = terminators
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._tokens: list[int] = []
        self._shown = ""
        self._done = False
        self.result: GenerationResult | None = None
        """The complete result, set once the stream is exhausted."""

    def __iter__(self) -> TextStream:
        return self

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        """Stop generating (if still running) and wait for the worker to finish."""
        self._cancel.set()
        self._done = True
        if self._thread is not None:
            self._thread.join()

    def _worker(self) -> None:
        try:
            self._run(QueueStreamer(self._queue), self._cancel.is_set)
        except BaseException as exc:  # handed to the consumer's thread, which re-raises it
            self._queue.put(exc)
        finally:
            self._queue.put(_END)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._worker, name="ragkit-stream", daemon=True)
        _LIVE_STREAMS.add(self)
        self._thread.start()

    def _visible(self) -> tuple[str, bool]:
        """Text that is safe to show now, and whether a stop string already ended it."""
        end = next((i for i, t in enumerate(self._tokens) if t in self._terminators), None)
        text = self._decode(self._tokens if end is None else self._tokens[:end])
        match = find_stop(text, self._stops)
        if match is not None:
            return text[: match[0]], True
        return text[: len(text) - held_back(text, self._stops)], end is not None

    def _advance(self, visible: str) -> str:
        if not visible.startswith(self._shown):
            return ""  # decoding rewrote earlier text: wait for the final text
        piece = visible[len(self._shown) :]
        self._shown = visible
        return piece

    def __next__(self) -> str:
        if self._thread is None and not self._done:
            self._start()
        while not self._done:
            item = self._queue.get()
            if item is _END:
                self._done = True
                if self._thread is not None:
                    self._thread.join()
                self.result = self._finish(self._tokens)
                piece = self._advance(self.result.text)
                if piece:
                    return piece
                break
            if isinstance(item, BaseException):
                self._done = True
                self._cancel.set()
                raise item
            self._tokens.extend(item)
            visible, finished = self._visible()
            if finished:
                self._cancel.set()  # the worker stops at its next step; its tokens are ignored
            piece = self._advance(visible)
            if piece:
                return piece
        raise StopIteration
