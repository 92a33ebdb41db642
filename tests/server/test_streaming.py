"""Server-sent events: framing of /v1/query streams and OpenAI chat-completion chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ragkit.server.sse import parse_sse, sse_event

QUESTION = "What is the capital of France?"


def test_sse_event_framing() -> None:
    assert sse_event({"a": "x\ny"}, "delta") == 'event: delta\ndata: {"a": "x\\ny"}\n\n'
    assert parse_sse(sse_event({"b": 1}) + "data: [DONE]\n\n") == [
        (None, '{"b": 1}'),
        (None, "[DONE]"),
    ]
    with pytest.raises(ValueError):
        sse_event("two\nlines")


def test_query_stream_events_and_final_answer(client: Any) -> None:
    plain = client.post("/v1/query", json={"question": QUESTION}).json()
    r = client.post("/v1/query", json={"question": QUESTION, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert r.text.endswith("\n\n")
    events = parse_sse(r.text)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "answer"
    assert set(names[1:-1]) == {"delta"}
    start = json.loads(events[0][1])
    final = json.loads(events[-1][1])
    pieces = "".join(json.loads(data)["text"] for name, data in events if name == "delta")
    assert final["id"] == start["id"]
    assert pieces.strip() == final["answer"]
    assert final["answer"] == plain["answer"]  # greedy: streamed == batched
    assert final["passages"] == plain["passages"]


def test_chat_stream_chunks(client: Any) -> None:
    request = {"messages": [{"role": "user", "content": QUESTION}]}
    plain = client.post("/v1/chat/completions", json=request).json()
    r = client.post("/v1/chat/completions", json={**request, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert isinstance(chunks[-1]["citations"], list)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == plain["choices"][0]["message"]["content"]


def test_stream_errors_before_start_are_json(client: Any) -> None:
    r = client.post("/v1/query", json={"question": " ", "stream": True})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "empty_question"


def test_a_streamed_answer_carries_the_pipelines_trace(client: Any) -> None:
    """The stream runs through the pipeline: every step is in the trace, each one timed."""
    body = {"question": QUESTION, "include_trace": True}
    plain = client.post("/v1/query", json=body).json()
    r = client.post("/v1/query", json={**body, "stream": True})
    final = json.loads(parse_sse(r.text)[-1][1])
    steps = final["trace"]["steps"]
    assert [s["step"] for s in steps] == [s["step"] for s in plain["trace"]["steps"]]
    assert [s["step"] for s in steps][-1] == "CitationStep"
    assert all(s["seconds"] > 0.0 for s in steps)
    assert final["trace"]["prompt"] == plain["trace"]["prompt"]
