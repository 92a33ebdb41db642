"""The OpenAI-API generator backend against real HTTP servers on loopback.

Mostly against ragkit's own server (``ragkit serve``'s FastAPI app under uvicorn, with a tiny
random Llama): its ``/v1/chat/completions`` answers the last user message with its own RAG
pipeline, so for a given message the backend must return exactly what that pipeline answers
(greedy decoding is deterministic). A second, scripted server plays the vLLM-only parts of the
protocol ragkit's server lacks (``/v1/models`` with ``max_model_len``, ``/v1/completions``, ``n``,
``stop_reason``, extra sampling parameters) and records the requests it receives.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from live_server import live_server
from tiny_llama import build_tiny_llama
from typer.testing import CliRunner

from ragkit import ChunkingSettings, Index
from ragkit.embedding import Embedder
from ragkit.generation import ContextLengthError, GenerationOptions, Generator
from ragkit.generation.backends import (
    BackendUnavailableError,
    GeneratorBackend,
    GeneratorBackendError,
    OpenAIGenerator,
    UnsupportedOptionError,
    openai_request_options,
)
from ragkit.generation.backends.base import (
    estimate_prompt_tokens,
    estimate_text_tokens,
    estimate_truncate,
    finish_text,
)
from ragkit.generation.backends.openai_api import PlannedRequest, plan_requests, translate_error
from ragkit.schema import Document

pytest.importorskip("openai")

KEY = "test-key-0123"
KEY_ENV = "RAGKIT_TEST_GENERATOR_KEY"
MAX_NEW = 8
TEXTS = {
    "strasbourg": "Strasbourg is the capital of Alsace. The Rhine river flows past Strasbourg.",
    "paris": "Paris is the capital of France. The Seine river flows through Paris.",
    "culture": "Culture includes music, art, language and the history of people.",
}
QUESTIONS = [
    "What is the capital of France?",
    "Which river flows past Strasbourg?",
    "What does culture include?",
]


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app's OpenAI-compatible base URL (``/v1``) while it is served."""
    with live_server(app) as base:
        yield f"{base}/v1"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(
        tmp_path_factory.mktemp("backend-llama"),
        list(TEXTS.values()),
        hidden_size=32,
        layers=1,
        heads=2,
        kv_heads=1,
        max_positions=2048,
    )


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder) -> Path:
    directory = tmp_path_factory.mktemp("backend-index") / "idx"
    with Index.create(
        directory, tiny_embedder, ChunkingSettings(unit="chars", chunk_size=200, chunk_overlap=0)
    ) as index:
        index.add_documents([Document(id=k, text=v, source=f"{k}.txt") for k, v in TEXTS.items()])
        index.commit()
    return directory


@pytest.fixture(scope="module")
def server_rag(index_dir: Path, llama_path: Path) -> Any:
    """The pipeline behind the server: what every answer through the backend must equal."""
    from ragkit.rag import RAGPipeline

    generator = Generator(str(llama_path), device="cpu").warm_up()
    return RAGPipeline.from_index(
        index_dir, generator, k=3, retriever="bm25", options={"max_new_tokens": MAX_NEW}
    )


@pytest.fixture(scope="module")
def ragkit_url(server_rag: Any) -> Iterator[str]:
    from pydantic import SecretStr

    from ragkit.server import ServerSettings, create_app

    settings = ServerSettings(api_keys=(SecretStr(KEY),), rate_limit_per_minute=None)
    with serving(create_app(server_rag, settings)) as url:
        yield url


def backend(url: str, **options: Any) -> OpenAIGenerator:
    """A backend for ragkit's server: it refuses ``stop`` and ``n``, so both stay client-side."""
    settings: dict[str, Any] = {
        "model": "ragkit",
        "api_key": KEY,
        "max_retries": 0,
        "timeout": 30,
        "server_side_stop": False,
        "use_n": False,
        "options": {"max_new_tokens": MAX_NEW},
    }
    settings.update(options)
    return OpenAIGenerator(base_url=url, **settings)


def server_pieces(server_rag: Any, question: str) -> list[str]:
    with server_rag.stream(question) as stream:
        return list(stream)


# ---------------------------------------------------------------------- against ragkit serve


def test_generate_returns_the_servers_answers_in_order(ragkit_url: str, server_rag: Any) -> None:
    gen = backend(ragkit_url)
    assert isinstance(gen, GeneratorBackend)
    prompts = [*QUESTIONS, QUESTIONS[0]]  # a repeated greedy prompt is sent once
    results = gen.generate(prompts, max_new_tokens=MAX_NEW)
    expected = [server_rag.ask(q).answer for q in prompts]
    assert [r.text for r in results] == expected
    assert results[0] == results[-1]
    for r in results:
        assert r.prompt_tokens > 0  # reported by the server (usage)
        assert 0 < r.completion_tokens <= MAX_NEW
        assert r.finish_reason in ("stop", "length")
    assert gen.generate([]) == []
    with pytest.raises(TypeError, match="list of prompts"):
        gen.generate(QUESTIONS[0])  # type: ignore[arg-type]


def test_chat_messages_and_warm_up(ragkit_url: str, server_rag: Any) -> None:
    gen = backend(ragkit_url)
    assert not gen.is_loaded
    assert gen.warm_up() is gen and gen.is_loaded  # ragkit serve has no /v1/models: fine
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTIONS[1]},
    ]
    [result] = gen.generate([messages])
    assert result.text == server_rag.ask(QUESTIONS[1]).answer
    assert result.prompt_text == "System: Be brief.\n\nUser: " + QUESTIONS[1] + "\n\nAssistant:"


def test_stream_relays_the_server_deltas(ragkit_url: str, server_rag: Any) -> None:
    gen = backend(ragkit_url)
    for question in QUESTIONS:
        with gen.stream(question) as stream:
            pieces = list(stream)
        assert pieces == server_pieces(server_rag, question)
        assert stream.result is not None
        assert "".join(pieces) == stream.result.text
        assert stream.result.finish_reason == "stop"
        assert stream.result.completion_tokens > 0  # estimated: ragkit streams carry no usage


def _long_answer(gen: OpenAIGenerator) -> tuple[str, str]:
    """A question whose answer is long enough to plant a stop string in its middle."""
    answers = {q: gen.generate([q])[0].text for q in QUESTIONS}
    question = max(answers, key=lambda q: len(answers[q]))
    assert len(answers[question]) >= 4, answers
    return question, answers[question]


def test_stop_strings_cut_results_and_streams(ragkit_url: str) -> None:
    gen = backend(ragkit_url)
    question, full = _long_answer(gen)
    middle = len(full) // 2
    stop = full[middle : middle + 2]
    expected = full[: full.find(stop)]

    [result] = gen.generate([question], stop=[stop, "never appears"])
    assert (result.text, result.finish_reason, result.stop_string) == (
        expected,
        "stop_string",
        stop,
    )

    with gen.stream(question, stop=[stop]) as stream:
        pieces = list(stream)
    assert "".join(pieces) == expected
    assert not any(stop in piece for piece in pieces)
    assert stream.result is not None and stream.result.finish_reason == "stop_string"

    # a stop string that never appears changes nothing
    [same] = gen.generate([question], stop=["never appears"])
    assert same.text == full and same.finish_reason != "stop_string"


def test_rag_pipeline_runs_on_the_openai_backend(
    ragkit_url: str, server_rag: Any, index_dir: Path, llama_path: Path
) -> None:
    from ragkit.rag import RAGPipeline

    for tokenizer in (None, str(llama_path)):  # estimated, then exact token budgets
        gen = backend(ragkit_url, tokenizer=tokenizer)
        rag = RAGPipeline.from_index(
            index_dir, gen, k=2, retriever="bm25", options={"max_new_tokens": MAX_NEW}
        )
        assert rag.generator is gen
        answer = rag.ask("What is the capital of France?")
        assert answer.passages[0].source == "paris.txt"
        assert answer.trace is not None
        built = next(s for s in answer.trace.steps if "prompt" in s.outputs)
        user_turn = built.outputs["prompt"][-1]["content"]  # grounded_qa is a chat template
        generated = next(s for s in answer.trace.steps if "finish_reason" in s.outputs)
        assert generated.outputs["text"] == server_rag.ask(user_turn).answer.strip()
        if tokenizer is not None:  # exact rendering through the local chat template
            assert answer.trace.prompt == Generator(tokenizer).render(built.outputs["prompt"])

        stream = rag.stream("Which river flows past Strasbourg?")
        text = "".join(stream)
        assert stream.answer is not None and stream.answer.passages
        assert text.strip() == "".join(server_pieces(server_rag, _user_turn(stream))).strip()


def _user_turn(stream: Any) -> str:
    step = next(s for s in stream.answer.trace.steps if "prompt" in s.outputs)
    return str(step.outputs["prompt"][-1]["content"])


def test_server_refusals_become_ragkit_errors(ragkit_url: str) -> None:
    with pytest.raises(GeneratorBackendError, match=r"HTTP 400.*stop sequences are not supported"):
        backend(ragkit_url, server_side_stop=True).generate(["hi"], stop=["x"])
    with pytest.raises(GeneratorBackendError, match="answered 404 to /completions"):
        backend(ragkit_url).generate(["raw prompt"], apply_chat_template=False)
    # ragkit serve lists its model at /v1/models, so a client needs no model name
    listed = backend(ragkit_url, model=None)
    assert listed.model_name and listed.generate(["hi"], max_new_tokens=2)[0].completion_tokens
    with pytest.raises(GeneratorBackendError, match="only n=1"):  # ragkit serve refuses n
        backend(ragkit_url, use_n=True).generate(["hi", "hi"], do_sample=True, seed=1)


def test_api_key_from_environment_and_never_shown(
    ragkit_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    gen = OpenAIGenerator("ragkit", ragkit_url, api_key_env=KEY_ENV, max_retries=0)
    assert gen.generate(["hi"])[0].finish_reason in ("stop", "length")

    wrong = "wrong-secret-987"
    bad = OpenAIGenerator("ragkit", ragkit_url, api_key=wrong, api_key_env=KEY_ENV, max_retries=0)
    with pytest.raises(GeneratorBackendError, match="refused the API key") as caught:
        bad.generate(["hi"])
    assert f"${KEY_ENV}" in str(caught.value)
    for shown in (str(caught.value), repr(bad), json.dumps(bad.config.model_dump(mode="json"))):
        assert wrong not in shown and KEY not in shown


def test_unreachable_server_is_a_clear_error() -> None:
    url = closed_port_url()
    gen = OpenAIGenerator("m", url, max_retries=0, timeout=5)
    with pytest.raises(BackendUnavailableError, match=f"cannot reach .*{url}"):
        gen.warm_up()
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        list(gen.stream("hi"))


def test_unsupported_options_fail_before_any_request() -> None:
    gen = OpenAIGenerator("m", closed_port_url(), max_retries=0)  # nothing listens there
    cases: list[dict[str, Any]] = [
        {"num_beams": 2},
        {"no_repeat_ngram_size": 3},
        {"do_sample": True, "top_k": 5},
        {"repetition_penalty": 1.2},
        {"min_new_tokens": 2},
    ]
    for options in cases:
        with pytest.raises(UnsupportedOptionError):
            gen.generate(["hi"], **options)
    with pytest.raises(UnsupportedOptionError, match="beam search"):
        gen.stream("hi", num_beams=3)


# ---------------------------------------------------------------------- a vLLM-like server


@pytest.fixture(scope="module")
def vllm_like() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A scripted server speaking vLLM's dialect; yields its URL and the bodies it received."""
    from fastapi import FastAPI

    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": "served-model", "object": "model", "owned_by": "x", "max_model_len": 1234}
        return {"object": "list", "data": [entry]}

    def usage() -> dict[str, int]:
        return {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        received.append({"endpoint": "chat", **body})
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": f"choice {i} seed {body.get('seed')}"},
                "finish_reason": "length",
            }
            for i in range(body.get("n", 1))
        ]
        return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": choices, "usage": usage()}  # fmt: skip

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        received.append({"endpoint": "completions", **body})
        stop = (body.get("stop") or [None])[0]
        choice = {"index": 0, "text": "cut here", "finish_reason": "stop", "stop_reason": stop}
        return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [choice], "usage": usage()}  # fmt: skip

    with serving(app) as url:
        yield url, received


def test_model_and_context_length_come_from_the_server(
    vllm_like: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = vllm_like
    gen = OpenAIGenerator(base_url=url, max_retries=0)
    assert gen.model_name == "served-model"
    assert gen.context_length == 1234
    assert gen.max_prompt_tokens({"max_new_tokens": 34}) == 1200
    assert OpenAIGenerator("other", url, context_length=99).context_length == 99


def test_sampling_seeds_and_n(vllm_like: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = vllm_like
    gen = OpenAIGenerator("served-model", url, max_retries=0, max_concurrency=1)
    received.clear()
    results = gen.generate(["p", "p", "q", "p"], do_sample=True, temperature=0.7, seed=10)
    assert [r.text for r in results] == [
        "choice 0 seed 10",
        "choice 1 seed 10",
        "choice 0 seed 12",
        "choice 2 seed 10",
    ]
    assert [(b.get("n", 1), b["seed"]) for b in received] == [(3, 10), (1, 12)]
    assert received[0]["temperature"] == 0.7 and received[0]["messages"][0]["content"] == "p"
    assert results[0].completion_tokens == len("choice 0 seed 10") // 3 + 1  # estimated: n > 1
    assert results[2].completion_tokens == 3  # usage of a one-choice request

    received.clear()
    gen_no_n = OpenAIGenerator("served-model", url, max_retries=0, use_n=False)
    texts = [r.text for r in gen_no_n.generate(["p", "p"], do_sample=True, seed=5)]
    assert texts == ["choice 0 seed 5", "choice 0 seed 6"]  # distinct samples, reproducible
    assert sorted(b["seed"] for b in received) == [5, 6]

    received.clear()
    greedy = gen.generate(["p", "p"])
    assert greedy[0] == greedy[1] and len(received) == 1
    assert received[0]["temperature"] == 0.0 and "seed" not in received[0]
    assert greedy[0].finish_reason == "length"


def test_completions_endpoint_stop_reason_and_extensions(
    vllm_like: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = vllm_like
    gen = OpenAIGenerator("served-model", url, max_retries=0, vllm_extensions=True)
    received.clear()
    [result] = gen.generate(
        ["<raw prompt>"],
        apply_chat_template=False,
        stop=["###"],
        do_sample=True,
        top_k=5,
        repetition_penalty=1.1,
        min_new_tokens=2,
        max_new_tokens=20,
    )
    [body] = received
    assert body["endpoint"] == "completions" and body["prompt"] == "<raw prompt>"
    assert (body["top_k"], body["repetition_penalty"], body["min_tokens"]) == (5, 1.1, 2)
    assert (body["stop"], body["max_tokens"]) == (["###"], 20)
    assert (result.text, result.finish_reason, result.stop_string) == (
        "cut here",
        "stop_string",
        "###",
    )
    assert result.prompt_text == "<raw prompt>"
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)


# ---------------------------------------------------------------------- pure mapping


def test_request_options_mapping() -> None:
    assert openai_request_options(GenerationOptions(max_new_tokens=5)) == {
        "max_tokens": 5,
        "temperature": 0.0,
    }
    sampled = GenerationOptions(do_sample=True, temperature=0.3, top_p=0.9, seed=4, stop=["a"])
    assert openai_request_options(sampled) == {
        "max_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 4,
        "stop": ["a"],
    }
    assert "stop" not in openai_request_options(sampled, server_side_stop=False)
    assert openai_request_options(GenerationOptions(do_sample=True))["temperature"] == 1.0
    ext = openai_request_options(
        GenerationOptions(do_sample=True, top_k=3, repetition_penalty=1.3), vllm_extensions=True
    )
    assert ext["extra_body"] == {"top_k": 3, "repetition_penalty": 1.3}
    with pytest.raises(UnsupportedOptionError, match="vllm_extensions=True"):
        openai_request_options(GenerationOptions(do_sample=True, top_k=3))
    with pytest.raises(UnsupportedOptionError, match="beam search"):
        openai_request_options(GenerationOptions(num_beams=2), vllm_extensions=True)


def test_request_plan() -> None:
    greedy = plan_requests(["a", "b", "a"], GenerationOptions(), use_n=True)
    assert greedy == [
        PlannedRequest((0, 2), 1, None, shared=True),
        PlannedRequest((1,), 1, None, shared=True),
    ]
    sampled = GenerationOptions(do_sample=True, seed=3)
    messages = [{"role": "user", "content": "a"}]
    assert plan_requests(["a", messages, "a"], sampled, use_n=True) == [
        PlannedRequest((0, 2), 2, 3, shared=False),
        PlannedRequest((1,), 1, 4, shared=False),
    ]
    assert plan_requests(["a", "a"], sampled, use_n=False) == [
        PlannedRequest((0,), 1, 3, shared=False),
        PlannedRequest((1,), 1, 4, shared=False),
    ]
    unseeded = plan_requests(["a"], GenerationOptions(do_sample=True), use_n=False)
    assert unseeded == [PlannedRequest((0,), 1, None, shared=False)]


def test_finish_reasons() -> None:
    assert finish_text("ab##cd", "length", None, ["##"]) == ("ab", "stop_string", "##")
    assert finish_text("ab", "stop", "##", ["##"]) == ("ab", "stop_string", "##")
    assert finish_text("ab", "stop", None, ["##"]) == ("ab", "stop", None)
    assert finish_text("ab", "length", None, []) == ("ab", "length", None)
    assert finish_text("ab", None, 2, []) == ("ab", "stop", None)  # a stop token id: EOS-like


def test_token_estimates_are_consistent() -> None:
    text = "Strasbourg est la capitale de l'Alsace — 東京 " * 20
    assert estimate_text_tokens("abcdef") == 2
    for budget in (0, 1, 7, 40, 10_000):
        cut = estimate_truncate(text, budget)
        assert text.startswith(cut)
        assert estimate_text_tokens(cut) <= budget
    messages = [{"role": "system", "content": "abc"}, {"role": "user", "content": "abcdef"}]
    assert estimate_prompt_tokens(messages) == 1 + 2 + 2 * 4
    assert estimate_prompt_tokens("abcdef", apply_chat_template=False) == 2
    gen = OpenAIGenerator("m", "http://127.0.0.1:9/v1", context_length=100)
    assert gen.count_tokens(messages) == estimate_prompt_tokens(messages)
    assert gen.truncate(text, 5) == estimate_truncate(text, 5)


def test_context_errors_are_recognised() -> None:
    import httpx
    import openai

    request = httpx.Request("POST", "http://x/v1/chat/completions")
    body = {"message": "This model's maximum context length is 2048 tokens.", "type": "x"}
    exc = openai.BadRequestError(
        "Error code: 400", response=httpx.Response(400, request=request), body=body
    )
    error = translate_error(exc, "http://x/v1", "K")
    assert isinstance(error, ContextLengthError)
    assert "maximum context length is 2048" in str(error)
    other = openai.BadRequestError(
        "Error code: 400",
        response=httpx.Response(400, request=request),
        body={"error": {"message": "bad temperature"}},
    )
    assert str(translate_error(other, "http://x/v1", "K")).endswith("(HTTP 400): bad temperature")


# ---------------------------------------------------------------------- command line


def test_cli_ask_and_chat_through_the_openai_backend(
    ragkit_url: str, index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragkit.cli import app

    monkeypatch.setenv(KEY_ENV, KEY)
    runner = CliRunner()
    common = ["--index", str(index_dir), "--retriever", "bm25", "-k", "2"]
    backend_args = [
        "--generator-backend",
        "openai",
        "--base-url",
        ragkit_url,
        "--api-key-env",
        KEY_ENV,
        "--generator",
        "ragkit",
    ]
    result = runner.invoke(
        app,
        ["ask", QUESTIONS[0], *common, *backend_args, "--max-new-tokens", "6", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] and data["trace"]["prompt"].count("[1]") >= 1

    streamed = runner.invoke(app, ["ask", QUESTIONS[1], *common, *backend_args])
    assert streamed.exit_code == 0, streamed.output

    chat = runner.invoke(
        app,
        ["chat", "--index", str(index_dir), *backend_args],
        input=f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n\n",
    )
    assert chat.exit_code == 0, chat.output


def test_cli_backend_errors(index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from ragkit.cli import app

    monkeypatch.setitem(sys.modules, "vllm", None)  # "not installed", even where it is
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    runner = CliRunner()
    base = ["ask", "What?", "--index", str(index_dir), "--retriever", "bm25"]
    cases = {  # (option, value): (exit status, message)
        ("--generator-backend", "vllm"): (1, "pip install 'ragkit[vllm]'"),
        ("--generator-backend", "llamacpp"): (1, "pip install 'ragkit[llamacpp]'"),
        ("--generator-backend", "tgi"): (
            2,
            "'--generator-backend': 'tgi' is not one of 'transformers', 'auto', 'llamacpp', "
            "'openai', 'vllm'",
        ),
        ("--base-url", "http://x/v1"): (1, "base_url do not apply to the auto"),
    }
    for extra, (status, message) in cases.items():
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == status, result.output
        assert message in " ".join(result.output.split()), result.output
        assert result.output.strip().count("\n") == 0, result.output


def test_cli_serve_wires_the_backend(
    ragkit_url: str, index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from ragkit.cli import app

    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    monkeypatch.setenv(KEY_ENV, KEY)
    runner = CliRunner()
    args = ["serve", "--index", str(index_dir), "--retriever", "bm25", "--rate-limit", "0"]
    upstream = ["--generator-backend", "openai", "--base-url", ragkit_url]
    result = runner.invoke(app, [*args, *upstream, "--api-key-env", KEY_ENV, "-g", "ragkit"])
    assert result.exit_code == 0, result.output
    generator = served[0].state.ragkit.service.rag.generator
    assert isinstance(generator, OpenAIGenerator) and generator.is_loaded  # warmed up

    down = runner.invoke(
        app, [*args, "--generator-backend", "openai", "--base-url", closed_port_url()]
    )
    assert down.exit_code == 1 and "cannot reach" in down.output
