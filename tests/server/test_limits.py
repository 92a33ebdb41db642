"""Limits: each one answers a clear 4xx JSON error; a full queue answers 503 + Retry-After."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ragkit.rag import Answer
from ragkit.server import Decoding, RAGService
from ragkit.server.limits import RateLimiter, retry_after_header


def _error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_question_length_limit(make_client: Any) -> None:
    client = make_client(max_question_chars=20)
    _error(client.post("/v1/query", json={"question": "x" * 21}), 400, "question_too_long")
    _error(client.post("/v1/search", json={"query": "x" * 21}), 400, "question_too_long")
    long_chat = {"messages": [{"role": "user", "content": "y" * 21}]}
    _error(client.post("/v1/chat/completions", json=long_chat), 400, "question_too_long")
    assert client.post("/v1/query", json={"question": "capital of France?"}).status_code == 200


def test_max_tokens_and_k_limits(make_client: Any) -> None:
    client = make_client(max_tokens=8, max_k=3)
    _error(
        client.post("/v1/query", json={"question": "Paris?", "max_tokens": 9}),
        400,
        "max_tokens_too_large",
    )
    chat = {"messages": [{"role": "user", "content": "Paris?"}], "max_completion_tokens": 100}
    _error(client.post("/v1/chat/completions", json=chat), 400, "max_tokens_too_large")
    _error(client.post("/v1/search", json={"query": "Paris", "k": 4}), 400, "k_too_large")
    _error(client.post("/v1/query", json={"question": "Paris?", "k": 4}), 400, "k_too_large")
    assert (
        client.post("/v1/query", json={"question": "Paris?", "max_tokens": 8, "k": 3}).status_code
        == 200
    )


def test_body_size_limit(make_client: Any) -> None:
    client = make_client(max_body_bytes=1024, max_question_chars=100_000)
    r = client.post("/v1/query", json={"question": "x" * 2000})
    _error(r, 413, "body_too_large")
    assert r.json()["error"]["type"] == "request_too_large"

    def chunked() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 200

    r = client.post("/v1/query", content=chunked(), headers={"content-type": "application/json"})
    _error(r, 413, "body_too_large")


def test_rate_limit_per_key(make_client: Any) -> None:
    client = make_client(rate_limit_per_minute=2)
    assert client.get("/v1/index/stats").status_code == 200
    assert client.get("/v1/index/stats").status_code == 200
    r = client.get("/v1/index/stats")
    _error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert client.get("/v1/health").status_code == 200  # health is not rate-limited


def test_rate_limiter_refills_and_separates_callers() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    wait = limiter.acquire("a")
    assert 0 < wait <= 1.0
    assert limiter.acquire("b") == 0
    now[0] += 1.0
    assert limiter.acquire("a") == 0
    assert retry_after_header(0.2) == "1" and retry_after_header(2.5) == "3"


class GatedService(RAGService):
    """Holds every batch until released, so requests pile up in the queue."""

    def __init__(self, rag: Any) -> None:
        super().__init__(rag)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def answer_batch(self, decoding: Decoding, items: list[tuple[str, int | None]]) -> list[Answer]:
        self.entered.set()
        assert self.gate.wait(30)
        return super().answer_batch(decoding, items)


def test_full_queue_answers_503_with_retry_after(make_client: Any, server_rag: Any) -> None:
    service = GatedService(server_rag)
    client = make_client(service, max_queue=1, max_batch_size=1, retry_after_s=3)
    ask = {"question": "capital of France?"}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/query", json=ask)
        assert service.entered.wait(30)  # the first request is being generated
        second = pool.submit(client.post, "/v1/query", json=ask)
        deadline = time.monotonic() + 30
        while client.get("/v1/health").json()["queue_waiting"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        third = client.post("/v1/query", json=ask)
        _error(third, 503, "overloaded")
        assert third.headers["retry-after"] == "3"
        service.gate.set()
        assert first.result().status_code == 200
        assert second.result().status_code == 200
    assert client.post("/v1/query", json=ask).status_code == 200


def test_stream_limit_answers_503(make_client: Any) -> None:
    client = make_client(max_streams=1)
    app_state = client.app.state.ragkit
    app_state.streams = 1  # one stream in progress
    r = client.post("/v1/query", json={"question": "Paris?", "stream": True})
    _error(r, 503, "overloaded")
    assert "retry-after" in r.headers
    app_state.streams = 0
    assert client.post("/v1/query", json={"question": "Paris?", "stream": True}).status_code == 200
    assert app_state.streams == 0  # the slot is released when the stream ends
