"""Request and response bodies of the HTTP API (they also define the OpenAPI schema).

Request models forbid unknown fields so that a misspelt option is a 422, not silently ignored —
except the OpenAI-compatible chat request, which must accept the extra fields that official
clients and chat front ends send (``user``, ``n``, ``presence_penalty``...). Its unsupported
values are rejected explicitly instead (see ``ChatCompletionRequest``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragkit.rag import Citation, Passage
from ragkit.rag.schema import Abstained, Answerability


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Strict):
    message: str
    type: str = Field(
        description="invalid_request_error, authentication_error, rate_limit_error..."
    )
    code: str | None = None


class ErrorResponse(_Strict):
    """Every 4xx/5xx carries this body (the shape OpenAI clients already parse)."""

    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503)
}
"""The error answers every keyed route may give, for the OpenAPI schema (``responses=``)."""


class Sampling(_Strict):
    """Decoding choices a request may make (bounded by the server's limits)."""

    max_tokens: int | None = Field(None, ge=1, description="Most new tokens to generate.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 or absent: greedy.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, description="Makes sampled answers reproducible.")


class QueryRequest(Sampling):
    question: str = Field(min_length=1)
    k: int | None = Field(None, ge=1, description="Passages to retrieve; default: the server's.")
    stream: bool = Field(False, description="Answer as server-sent events (see docs/serving.md).")
    include_trace: bool = Field(False, description="Return the pipeline trace (with the prompt).")


class QueryResponse(_Strict):
    id: str = Field(description="Trace id; also the answer id for POST /v1/feedback.")
    question: str
    answer: str
    citations: list[Citation]
    passages: list[Passage]
    model: str
    abstained: Abstained = False
    answerability: Answerability = None
    trace: dict[str, Any] | None = None


class SearchRequest(_Strict):
    query: str = Field(min_length=1)
    k: int = Field(5, ge=1)


class SearchHit(_Strict):
    rank: int
    score: float
    chunk_id: str
    source: str
    start: int
    end: int
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(_Strict):
    query: str
    hits: list[SearchHit]


class HealthResponse(_Strict):
    status: Literal["ok"] = "ok"
    model: str
    model_loaded: bool
    queue_waiting: int
    batches: int
    batched_requests: int
    largest_batch: int
    auth_required: bool
    feedback: bool


class IndexStatsResponse(_Strict):
    stats: dict[str, Any]


class FeedbackRequest(_Strict):
    """Either a vote on one answer, or a choice between two answers to the same question."""

    answer_id: str | None = None
    vote: Literal["up", "down"] | None = None
    chosen_id: str | None = None
    rejected_id: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRequest:
        voting = self.answer_id is not None or self.vote is not None
        choosing = self.chosen_id is not None or self.rejected_id is not None
        if voting == choosing:
            raise ValueError("give either answer_id + vote, or chosen_id + rejected_id")
        if voting and (self.answer_id is None or self.vote is None):
            raise ValueError("a vote needs both answer_id and vote")
        if choosing and (self.chosen_id is None or self.rejected_id is None):
            raise ValueError("a choice needs both chosen_id and rejected_id")
        return self


class FeedbackResponse(_Strict):
    recorded: Literal["vote", "choice"]


class ReloadResponse(_Strict):
    """``POST /v1/admin/reload``: what is served now."""

    reloaded: Literal[True] = True
    model: str
    adapter: str | None
    prompt_format: str
    reloads: int = Field(description="Reloads since the server started.")
    seconds: float = Field(description="Time to build and load the new generator.")


# ---------------------------------------------------------------------- OpenAI-compatible


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Content as text; multi-part content keeps its text parts only."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class ChatCompletionRequest(BaseModel):
    """OpenAI chat request. The last user message is the question; retrieval runs behind it.

    Earlier turns are not (yet) used to rewrite the question; ``n`` other than 1, tools and
    ``response_format`` are refused with a 400 rather than ignored.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    stream: bool = False
    n: int = 1
    stop: str | list[str] | None = None


class ChatChoiceMessage(_Strict):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Strict):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"] = "stop"


class Usage(_Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletionResponse(_Strict):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[Citation] = Field(
        default_factory=list, description="ragkit extension: the passages the answer cites."
    )


class ModelCard(_Strict):
    """One model in OpenAI's list-models shape (``client.models.list()``)."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the server started.")
    owned_by: str = "ragkit"


class ModelList(_Strict):
    object: Literal["list"] = "list"
    data: list[ModelCard]
