"""What the routes share: one :class:`ServerState` per app, reached through a dependency.

``create_app`` builds it and keeps it as ``app.state.ragkit``; routes take it with
:data:`~ragkit.server.dependencies.AppState`. It holds the settings, the service, the batcher,
the rate limiter, the feedback store and the count of open streams, and does the route-side
work that several routes need: bounding a request, answering through the batcher, opening and
draining a stream in worker threads, recording an answer for feedback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ragkit.feedback import FeedbackStore
from ragkit.rag import Answer, AnswerStream
from ragkit.server.batching import DynamicBatcher, QueueFullError
from ragkit.server.errors import ApiError, log
from ragkit.server.limits import RateLimiter
from ragkit.server.schemas import QueryResponse
from ragkit.server.service import Decoding, RAGService
from ragkit.server.settings import ServerSettings

_END = object()
BatchItem = tuple[str, int | None]


class ServerState:
    """What the routes share: settings, service, batcher, limiter, store, stream count."""

    def __init__(
        self,
        service: RAGService,
        settings: ServerSettings,
        store: FeedbackStore | None,
        own_store: bool = False,
    ) -> None:
        self.service = service
        self.settings = settings
        self.store = store
        self.own_store = own_store
        """Whether the app opened the store (and so closes it at shutdown)."""
        self.batcher: DynamicBatcher[Decoding, BatchItem, Answer] = DynamicBatcher(
            lambda key, items: service.answer_batch(key, items),
            max_batch=settings.max_batch_size if settings.batching else 1,
            wait_s=settings.batch_wait_ms / 1000.0 if settings.batching else 0.0,
            max_queue=settings.max_queue,
        )
        self.limiter = (
            RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
            if settings.rate_limit_per_minute
            else None
        )
        self.reloading = asyncio.Lock()
        """Held while a reload runs: reloads run one at a time."""
        self.streams = 0
        self.started = int(time.time())

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.own_store and self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ limits

    def busy(self, what: str) -> ApiError:
        return ApiError(
            503,
            f"server busy: {what}; retry later",
            "overloaded",
            {"Retry-After": str(self.settings.retry_after_s)},
        )

    def check_question(self, question: str) -> str:
        limit = self.settings.max_question_chars
        if len(question) > limit:
            raise ApiError(
                400,
                f"question has {len(question)} characters; the limit is {limit}",
                "question_too_long",
            )
        if not question.strip():
            raise ApiError(400, "question is empty", "empty_question")
        return question

    def check_k(self, k: int | None) -> int | None:
        if k is not None and k > self.settings.max_k:
            raise ApiError(400, f"k={k} exceeds the limit of {self.settings.max_k}", "k_too_large")
        return k

    def decoding(
        self,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        seed: int | None,
    ) -> Decoding:
        limit = self.settings.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise ApiError(
                400, f"max_tokens={max_tokens} exceeds the limit of {limit}", "max_tokens_too_large"
            )
        return Decoding(
            max_new_tokens=max_tokens or self.settings.default_max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )

    # ------------------------------------------------------------------ work

    async def ask(self, question: str, k: int | None, decoding: Decoding) -> Answer:
        try:
            return await self.batcher.submit(decoding, (question, k))
        except QueueFullError:
            raise self.busy("the request queue is full") from None

    async def open_stream(self, question: str, k: int | None, decoding: Decoding) -> AnswerStream:
        """Retrieve and build the prompt (in a thread) and start the streamed generation; a
        failure there is the request's error status, not an event of the stream."""
        if self.streams >= self.settings.max_streams:
            raise self.busy(f"{self.streams} answers are already streaming")
        self.streams += 1
        try:
            return await asyncio.to_thread(self.service.stream, question, k, decoding)
        except BaseException:
            self.streams -= 1
            raise

    async def pieces(self, stream: AnswerStream) -> AsyncIterator[str]:
        """The stream's text pieces, each fetched in a thread; releases the stream slot."""
        it: Iterator[str] = iter(stream)
        try:
            while True:
                piece = await asyncio.to_thread(next, it, _END)
                if piece is _END:
                    return
                assert isinstance(piece, str)
                yield piece
        finally:
            self.streams -= 1
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(ValueError):  # still running in its thread
                    close()

    async def remember(self, answer_id: str, answer: Answer) -> None:
        """Record a served answer for feedback; a failure is logged, never fails the answer."""
        if self.store is None:
            return
        try:
            await asyncio.to_thread(
                self.store.record_answer,
                answer_id,
                answer.question,
                answer.answer,
                [p.model_dump() for p in answer.passages],
                self.service.model_name(),
                prompt_format=self.service.prompt_format(),
                adapter=self.service.adapter_name(),
            )
        except Exception:
            log.warning(
                "could not record answer %s in the feedback store", answer_id, exc_info=True
            )

    def query_response(self, answer_id: str, answer: Answer, include_trace: bool) -> QueryResponse:
        return QueryResponse(
            id=answer_id,
            question=answer.question,
            answer=answer.answer,
            citations=answer.citations,
            passages=answer.passages,
            model=self.settings.model_id,
            abstained=answer.abstained,
            answerability=answer.answerability,
            trace=answer.trace.model_dump(mode="json") if include_trace and answer.trace else None,
        )


def generation_info(answer: Answer) -> dict[str, Any]:
    """Token counts and finish reason: the answer's usage, else found in the trace (strategies
    that make several model calls report no usage)."""
    if answer.usage is not None:
        return answer.usage.model_dump()

    def find(value: Any) -> dict[str, Any] | None:
        if isinstance(value, dict):
            if "completion_tokens" in value and "prompt_tokens" in value:
                return value
            for item in value.values():
                found = find(item)
                if found is not None:
                    return found
        return None

    if answer.trace is not None:
        for step in answer.trace.steps:
            found = find(step.outputs)
            if found is not None:
                return found
    return {}


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex
