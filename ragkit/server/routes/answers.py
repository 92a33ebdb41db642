"""Answering: ``POST /v1/query`` and the OpenAI-compatible ``POST /v1/chat/completions``.

Both answer through the batcher, or stream as server-sent events when asked (``stream: true``):
the pipeline's pieces are relayed as they are generated, then the finished answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ragkit.rag import AnswerStream
from ragkit.server.dependencies import AppState, Caller
from ragkit.server.errors import ApiError, as_api_error, error_body
from ragkit.server.schemas import (
    ERRORS,
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    QueryRequest,
    QueryResponse,
    Usage,
)
from ragkit.server.sse import DONE, SSE_HEADERS, SSE_MEDIA_TYPE, sse_event
from ragkit.server.state import ServerState, generation_info, new_id

router = APIRouter()
STREAMED: dict[int | str, dict[str, Any]] = {**ERRORS, 200: {"content": {SSE_MEDIA_TYPE: {}}}}


@router.post("/v1/query", response_model=QueryResponse, responses=STREAMED, tags=["rag"])
async def query(body: QueryRequest, state: AppState, caller: Caller) -> Any:
    """Answer a question with citations; ``stream: true`` answers as server-sent events."""
    question = state.check_question(body.question)
    k = state.check_k(body.k)
    decoding = state.decoding(body.max_tokens, body.temperature, body.top_p, body.seed)
    answer_id = new_id()
    if body.stream:
        stream = await state.open_stream(question, k, decoding)
        return StreamingResponse(
            query_events(state, answer_id, stream, body.include_trace),
            media_type=SSE_MEDIA_TYPE,
            headers=SSE_HEADERS,
        )
    answer = await state.ask(question, k, decoding)
    await state.remember(answer_id, answer)
    return state.query_response(answer_id, answer, body.include_trace)


async def query_events(
    state: ServerState, answer_id: str, stream: AnswerStream, include_trace: bool
) -> AsyncIterator[str]:
    """``start``, one ``delta`` per piece, then ``answer`` (or ``error``)."""
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


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=STREAMED,
    tags=["openai"],
)
async def chat_completions(body: ChatCompletionRequest, state: AppState, caller: Caller) -> Any:
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
            chat_events(state, answer_id, created, stream),
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
        model=state.settings.model_id,
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


async def chat_events(
    state: ServerState, answer_id: str, created: int, stream: AnswerStream
) -> AsyncIterator[str]:
    """OpenAI's chunks: the role, one content delta per piece, the stop with the citations,
    then ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        return sse_event(
            {
                "id": answer_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": state.settings.model_id,
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
