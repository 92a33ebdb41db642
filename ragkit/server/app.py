"""The FastAPI application: routes, limits and the glue to the batcher and feedback store.

Routes validate and bound the request, then hand the work to the library — answers through the
:class:`~ragkit.server.batching.DynamicBatcher` (batched ``ask_batch`` in a worker thread),
streams and searches in threads — so the event loop only ever waits, never computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, StreamingResponse

from ragkit.errors import RagkitError
from ragkit.feedback import FeedbackStore
from ragkit.rag import Answer, AnswerStream, RAGPipeline
from ragkit.server.auth import bearer_token, caller_id, key_matches
from ragkit.server.batching import DynamicBatcher, QueueFullError
from ragkit.server.errors import ApiError, as_api_error, error_body, install_error_handlers
from ragkit.server.limits import RateLimiter, rate_limit_bucket, retry_after_header
from ragkit.server.middleware import BodySizeLimit
from ragkit.server.schemas import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    IndexStatsResponse,
    ModelCard,
    ModelList,
    QueryRequest,
    QueryResponse,
    ReloadResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
    Usage,
)
from ragkit.server.service import Decoding, RAGService
from ragkit.server.settings import ServerSettings
from ragkit.server.sse import DONE, SSE_HEADERS, SSE_MEDIA_TYPE, sse_event

log = logging.getLogger("ragkit.server")
STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503)
}
_END = object()
BatchItem = tuple[str, int | None]


class ServerState:
    """What the routes share: settings, service, batcher, limiter, store, stream count."""

    def __init__(
        self, service: RAGService, settings: ServerSettings, store: FeedbackStore | None
    ) -> None:
        self.service = service
        self.settings = settings
        self.store = store
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
        self.streams = 0
        self.started = int(time.time())

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


def create_app(
    rag: RAGPipeline | RAGService,
    settings: ServerSettings | None = None,
    store: FeedbackStore | None = None,
) -> FastAPI:
    """Build the app around a pipeline. ``store`` (or ``settings.feedback_db``) enables feedback."""
    settings = settings or ServerSettings()
    service = rag if isinstance(rag, RAGService) else RAGService(rag)
    own_store = store is None and settings.feedback_db is not None
    if own_store:
        assert settings.feedback_db is not None
        store = FeedbackStore(settings.feedback_db)
    state = ServerState(service, settings, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.batcher.start()
        try:
            yield
        finally:
            await state.batcher.stop()
            if own_store and store is not None:
                store.close()

    app = FastAPI(
        title="ragkit",
        version="1",
        summary="Retrieval-augmented question answering with citations; OpenAI-compatible chat.",
        lifespan=lifespan,
    )
    app.state.ragkit = state
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    async def guard(request: Request) -> str:
        """Authenticate (when keys are configured) and rate-limit the caller."""
        token = bearer_token(request.headers.get("authorization"))
        if settings.auth_required:
            if token is None or not key_matches(token, settings.api_keys):
                raise ApiError(
                    401,
                    "missing or invalid API key (send Authorization: Bearer <key>)",
                    "invalid_api_key",
                    {"WWW-Authenticate": "Bearer"},
                )
        else:
            token = None
        client = request.client.host if request.client else None
        caller = caller_id(token, client)
        bucket = rate_limit_bucket(token, client, settings.rate_limit_loopback)
        if state.limiter is not None and bucket is not None:
            wait = state.limiter.acquire(bucket)
            if wait > 0:
                raise ApiError(
                    429,
                    f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded",
                    "rate_limited",
                    {"Retry-After": retry_after_header(wait)},
                )
        return caller

    async def admin(request: Request) -> str:
        """Admin routes need API keys configured (else 403: no one may use them) and a valid key."""
        if not settings.auth_required:
            raise ApiError(
                403,
                "admin routes are disabled: the server has no API keys "
                "(start it with --api-key-file or RAGKIT_API_KEY)",
                "admin_disabled",
            )
        return await guard(request)

    reloading = asyncio.Lock()

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        responses={**_ERRORS, 403: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
        tags=["admin"],
    )
    async def reload(caller: str = Depends(admin)) -> ReloadResponse:
        """Load the generator again (e.g. a newly promoted adapter) and swap it in.

        The old generator keeps answering while the new one loads; requests already running
        at the swap finish on it. A failed load keeps the old generator and says why.
        """
        began = time.perf_counter()
        async with reloading:
            try:
                await asyncio.to_thread(service.reload)
            except RagkitError as exc:
                raise ApiError(
                    409, f"reload failed; still serving the previous model: {exc}", "reload_failed"
                ) from None
        log.info("reloaded the generator (reload %d) for %s", service.reloads, caller)
        return ReloadResponse(
            model=service.model_name(),
            adapter=service.adapter_name() or None,
            prompt_format=service.prompt_format(),
            reloads=service.reloads,
            seconds=round(time.perf_counter() - began, 3),
        )

    @app.get("/v1/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        stats = state.batcher.stats
        return HealthResponse(
            model=settings.model_id,
            model_loaded=service.rag.generator.is_loaded,
            queue_waiting=state.batcher.waiting,
            batches=stats.batches,
            batched_requests=stats.items,
            largest_batch=stats.largest,
            auth_required=settings.auth_required,
            feedback=state.store is not None,
        )

    @app.get(
        "/v1/index/stats", response_model=IndexStatsResponse, responses=_ERRORS, tags=["service"]
    )
    async def index_stats(caller: str = Depends(guard)) -> IndexStatsResponse:
        return IndexStatsResponse(stats=service.index_stats())

    @app.post("/v1/search", response_model=SearchResponse, responses=_ERRORS, tags=["rag"])
    async def search(body: SearchRequest, caller: str = Depends(guard)) -> SearchResponse:
        query = state.check_question(body.query)
        k = state.check_k(body.k)
        assert k is not None
        hits = await asyncio.to_thread(service.search, query, k)
        return SearchResponse(
            query=query,
            hits=[
                SearchHit(
                    rank=h.rank,
                    score=h.score,
                    chunk_id=h.chunk.id,
                    source=h.chunk.source,
                    start=h.chunk.start,
                    end=h.chunk.end,
                    text=h.chunk.text,
                    metadata=h.chunk.metadata,
                )
                for h in hits
            ],
        )

    @app.post(
        "/v1/query",
        response_model=QueryResponse,
        responses={**_ERRORS, 200: {"content": {SSE_MEDIA_TYPE: {}}}},
        tags=["rag"],
    )
    async def query(body: QueryRequest, caller: str = Depends(guard)) -> Any:
        """Answer a question with citations; ``stream: true`` answers as server-sent events."""
        question = state.check_question(body.question)
        k = state.check_k(body.k)
        decoding = state.decoding(body.max_tokens, body.temperature, body.top_p, body.seed)
        answer_id = new_id()
        if body.stream:
            stream = await state.open_stream(question, k, decoding)
            return StreamingResponse(
                query_events(answer_id, stream, body.include_trace),
                media_type=SSE_MEDIA_TYPE,
                headers=SSE_HEADERS,
            )
        answer = await state.ask(question, k, decoding)
        await state.remember(answer_id, answer)
        return state.query_response(answer_id, answer, body.include_trace)

    async def query_events(
        answer_id: str, stream: AnswerStream, include_trace: bool
    ) -> AsyncIterator[str]:
        yield sse_event({"id": answer_id}, "start")
        try:
            async for piece in state.pieces(stream):
                yield sse_event({"text": piece}, "delta")
            assert stream.answer is not None
            await state.remember(answer_id, stream.answer)
            done = state.query_response(answer_id, stream.answer, include_trace)
            yield sse_event(done.model_dump(mode="json"), "answer")
        except Exception as exc:
            err = as_api_error(exc)
            yield sse_event(error_body(err.status, err.message, err.code), "error")

    def model_card() -> ModelCard:
        return ModelCard(id=settings.model_id, created=state.started)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, tags=["openai"])
    async def list_models(caller: str = Depends(guard)) -> ModelList:
        """OpenAI-compatible list of models: the one model this server answers with."""
        return ModelList(data=[model_card()])

    @app.get(
        "/v1/models/{model:path}",
        response_model=ModelCard,
        responses={**_ERRORS, 404: {"model": ErrorResponse}},
        tags=["openai"],
    )
    async def retrieve_model(model: str, caller: str = Depends(guard)) -> ModelCard:
        if model != settings.model_id:
            raise ApiError(404, f"model {model!r} does not exist", "model_not_found")
        return model_card()

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses={**_ERRORS, 200: {"content": {SSE_MEDIA_TYPE: {}}}},
        tags=["openai"],
    )
    async def chat_completions(body: ChatCompletionRequest, caller: str = Depends(guard)) -> Any:
        """OpenAI-compatible chat: the last user message is the question; citations are extra."""
        if body.n != 1:
            raise ApiError(400, "only n=1 is supported", "unsupported_parameter")
        if body.stop:
            raise ApiError(400, "stop sequences are not supported", "unsupported_parameter")
        extra = body.model_extra or {}
        for name in ("tools", "functions", "tool_choice", "response_format"):
            if extra.get(name) not in (None, [], {"type": "text"}, "none"):
                raise ApiError(400, f"{name} is not supported", "unsupported_parameter")
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            raise ApiError(400, "messages contain no user message", "no_question")
        question = state.check_question(users[-1].text())
        decoding = state.decoding(
            body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p, body.seed
        )
        answer_id = new_id("chatcmpl-")
        created = int(time.time())
        if body.stream:
            stream = await state.open_stream(question, None, decoding)
            return StreamingResponse(
                chat_events(answer_id, created, stream),
                media_type=SSE_MEDIA_TYPE,
                headers=SSE_HEADERS,
            )
        answer = await state.ask(question, None, decoding)
        await state.remember(answer_id, answer)
        info = generation_info(answer)
        prompt_tokens = int(info.get("prompt_tokens", 0))
        completion_tokens = int(info.get("completion_tokens", 0))
        return ChatCompletionResponse(
            id=answer_id,
            created=created,
            model=settings.model_id,
            choices=[
                ChatChoice(
                    message=ChatChoiceMessage(content=answer.answer),
                    finish_reason="length" if info.get("finish_reason") == "length" else "stop",
                )
            ],
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            citations=answer.citations,
        )

    async def chat_events(answer_id: str, created: int, stream: AnswerStream) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
            return sse_event(
                {
                    "id": answer_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": settings.model_id,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    **more,
                }
            )

        yield chunk({"role": "assistant", "content": ""})
        try:
            async for piece in state.pieces(stream):
                yield chunk({"content": piece})
            assert stream.answer is not None
            await state.remember(answer_id, stream.answer)
            citations = [c.model_dump(mode="json") for c in stream.answer.citations]
            yield chunk({}, "stop", citations=citations)
        except Exception as exc:
            err = as_api_error(exc)
            yield sse_event(error_body(err.status, err.message, err.code))
        yield DONE

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses=_ERRORS, tags=["feedback"])
    async def feedback(body: FeedbackRequest, caller: str = Depends(guard)) -> FeedbackResponse:
        store = state.store
        if store is None:
            raise ApiError(404, "this server does not record feedback", "feedback_disabled")
        if body.vote is not None and body.answer_id is not None:
            await asyncio.to_thread(store.vote, body.answer_id, 1 if body.vote == "up" else -1)
            return FeedbackResponse(recorded="vote")
        assert body.chosen_id is not None and body.rejected_id is not None
        await asyncio.to_thread(store.choose, body.chosen_id, body.rejected_id)
        return FeedbackResponse(recorded="choice")

    if settings.serve_page:

        @app.get("/", include_in_schema=False)
        async def page() -> FileResponse:
            return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    return app
