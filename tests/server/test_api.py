"""The HTTP API's shapes: health, query, search, stats, chat completions, OpenAPI, errors."""

from __future__ import annotations

from typing import Any

from ragkit.server.schemas import ChatCompletionResponse, QueryResponse, SearchResponse


def test_health_reports_model_and_queue(client: Any) -> None:
    body = client.get("/v1/health").json()
    assert body["status"] == "ok"
    assert body["model_loaded"] is True
    assert body["queue_waiting"] == 0
    assert body["feedback"] is True
    assert body["auth_required"] is False


def test_query_returns_answer_citations_and_trace_id(client: Any) -> None:
    r = client.post("/v1/query", json={"question": "What is the capital of France?"})
    assert r.status_code == 200, r.text
    body = QueryResponse.model_validate(r.json())
    assert len(body.id) == 32
    assert body.answer
    assert body.trace is None
    assert r.json()["abstained"] is False  # said outright, not left to string matching
    assert r.json()["answerability"] is None  # the test generator has no answerability probe
    assert [p.n for p in body.passages] == list(range(1, len(body.passages) + 1))
    assert body.passages[0].source == "paris.txt"
    for citation in body.citations:
        assert citation.n in {p.n for p in body.passages}


def test_query_ids_are_unique(client: Any) -> None:
    ids = {
        client.post("/v1/query", json={"question": "capital of Alsace?"}).json()["id"]
        for _ in range(2)
    }
    assert len(ids) == 2


def test_search_returns_ranked_hits(client: Any) -> None:
    r = client.post("/v1/search", json={"query": "Rhine river Strasbourg", "k": 2})
    assert r.status_code == 200, r.text
    body = SearchResponse.model_validate(r.json())
    assert 1 <= len(body.hits) <= 2
    assert body.hits[0].source == "strasbourg.txt"
    assert "Rhine" in body.hits[0].text
    assert [h.rank for h in body.hits] == sorted(h.rank for h in body.hits)


def test_index_stats(client: Any) -> None:
    stats = client.get("/v1/index/stats").json()["stats"]
    assert stats["counts"]["documents"] == 4
    assert stats["counts"]["chunks"] == 4
    assert stats["retriever"] == "BM25Retriever"


def test_chat_completion_matches_openai_shape(client: Any) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "anything",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "user": "someone",  # extra OpenAI fields are accepted
        },
    )
    assert r.status_code == 200, r.text
    body = ChatCompletionResponse.model_validate(r.json())
    assert body.id.startswith("chatcmpl-")
    assert body.object == "chat.completion"
    assert body.choices[0].message.role == "assistant"
    assert body.choices[0].message.content
    assert body.usage.prompt_tokens > 0
    assert 0 < body.usage.completion_tokens <= 6
    assert body.usage.total_tokens == body.usage.prompt_tokens + body.usage.completion_tokens
    assert "citations" in r.json()


def test_max_tokens_is_honoured_per_request(client: Any) -> None:
    def completion_tokens(max_tokens: int) -> int:
        r = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "culture?"}], "max_tokens": max_tokens},
        )
        assert r.status_code == 200, r.text
        return int(r.json()["usage"]["completion_tokens"])

    assert completion_tokens(2) <= 2
    assert completion_tokens(1) == 1


def test_chat_rejects_unsupported_parameters(client: Any) -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    for extra in ({"n": 2}, {"stop": ["x"]}, {"tools": [{"type": "function"}]}):
        r = client.post("/v1/chat/completions", json={**base, **extra})
        assert r.status_code == 400, extra
        assert r.json()["error"]["code"] == "unsupported_parameter"
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "no_question"


def test_validation_errors_are_json(client: Any) -> None:
    r = client.post("/v1/query", json={"question": "x", "temprature": 0.5})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "temprature" in error["message"]
    r = client.post("/v1/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "error" in r.json()


def test_unknown_route_is_json_404(client: Any) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


def test_openapi_schema_describes_the_api(client: Any) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/query",
        "/v1/search",
        "/v1/health",
        "/v1/index/stats",
        "/v1/chat/completions",
        "/v1/feedback",
    ):
        assert path in paths, path
    query = paths["/v1/query"]["post"]
    assert "text/event-stream" in query["responses"]["200"]["content"]
    assert "503" in query["responses"]
    assert "QueryRequest" in schema["components"]["schemas"]
    assert "/" not in paths


def test_page_is_served(client: Any) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in r.headers
    page = r.text
    for needle in ("/v1/query", "/v1/feedback", "stream: true", "textContent", "cite"):
        assert needle in page


def test_page_can_be_turned_off(make_client: Any) -> None:
    assert make_client(serve_page=False).get("/").status_code == 404


def test_index_stats_are_read_off_the_event_loop(client: Any, monkeypatch: Any) -> None:
    """Counting reads the store: it runs in a worker thread, never on the event loop."""
    import asyncio

    service = client.app.state.ragkit.service
    read = service.index_stats
    loops: list[bool] = []

    def index_stats() -> dict[str, Any]:
        try:
            asyncio.get_running_loop()
            loops.append(True)
        except RuntimeError:
            loops.append(False)
        return read()

    monkeypatch.setattr(service, "index_stats", index_stats)
    assert client.get("/v1/index/stats").json()["stats"]["counts"]["documents"] == 4
    assert loops == [False]
