"""A generator backend for any OpenAI-compatible server: ``vllm serve``, ``ragkit serve``, others.

Generation then runs where the GPUs are (a vLLM server batches requests from many clients
continuously), while retrieval and prompt building stay in the ragkit process. The official
``openai`` package is the HTTP client; it is imported on first use only.

Decisions, each also in docs/backends.md:

- **Which endpoint.** Chat messages go to ``/v1/chat/completions``. A plain string is sent as one
  user message too, which is what the transformers backend does with a string by default
  (it wraps it in the chat template). Only ``apply_chat_template=False`` — "this text is already
  the exact prompt" — uses the legacy ``/v1/completions`` endpoint, which vLLM serves and many
  chat-only servers (``ragkit serve`` included) do not; their 404 becomes a clear error.
- **Options map or fail.** Greedy is ``temperature=0``; sampling sends ``temperature``,
  ``top_p`` and ``seed``; stop strings go to ``stop``. Options the API cannot express (beam
  search, ``no_repeat_ngram_size``; ``top_k``, ``min_new_tokens`` and ``repetition_penalty``
  unless the server is vLLM and ``vllm_extensions=True``) raise :class:`UnsupportedOptionError`
  before any request is sent, instead of being dropped.
- **Stop strings are also applied here.** The text is cut before the earliest stop string on
  the client too, so results are identical whether or not the server honoured ``stop`` (some
  servers refuse it: ``server_side_stop=False`` then keeps them client-side only) and streams
  never show a stop string.
- **Batches become concurrent requests** (``max_concurrency`` at a time; the server batches
  them). Identical greedy prompts are sent once. Sampling with a seed sends ``seed + i`` for the
  i-th prompt, so repeated prompts (self-consistency) give distinct, reproducible samples; with
  ``use_n`` repeated sampled prompts become one request with ``n`` choices (the prompt is
  processed and billed once).
- **The API key** comes from ``api_key=`` or the environment variable named by
  ``api_key_env``; it is never part of the config (so never saved with a pipeline) nor of any
  message or repr.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ragkit.errors import RagkitError
from ragkit.generation.backends.base import (
    DEFAULT_CONTEXT_LENGTH,
    BackendUnavailableError,
    GeneratorBackendError,
    UnsupportedOptionError,
    check_prompts,
    finish_text,
    resolve_options,
    sample_seeds,
)
from ragkit.generation.backends.tokens import TokenAccounting
from ragkit.generation.chat import Prompt, as_messages, plain_transcript
from ragkit.generation.generator import ContextLengthError
from ragkit.generation.options import GenerationOptions
from ragkit.generation.results import GenerationResult
from ragkit.generation.stopping import find_stop, held_back

INSTALL_HINT = "pip install 'ragkit[openai]'"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
"""Where ``vllm serve`` and ``ragkit serve`` listen by default. Never a hosted API by default:
documents must not leave the machine unless a URL says so."""
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
NO_API_KEY = "EMPTY"
"""Sent when no key is configured: the client requires one, local servers ignore it."""

_CONTEXT_WORDS = ("context length", "context window", "maximum context", "max_model_len")


class OpenAIGeneratorConfig(BaseModel):
    """The OpenAI backend's settings (no secret in here: the key is read from the environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["openai"] = "openai"
    model: str | None = Field(
        None, description="Model name on the server; None: the first model the server lists."
    )
    base_url: str | None = Field(
        None, description=f"API root; None: $OPENAI_BASE_URL, else {DEFAULT_BASE_URL}."
    )
    api_key_env: str = Field(
        DEFAULT_API_KEY_ENV, min_length=1, description="Environment variable holding the key."
    )
    tokenizer: str | None = Field(
        None,
        description="Local copy of the served model's tokenizer (hub id, folder or 'default') "
        "for exact token counts; None: counts are byte-based estimates.",
    )
    context_length: int | None = Field(
        None,
        ge=1,
        description="Model context in tokens; None: the server's max_model_len (vLLM reports "
        f"it), else the tokenizer's config, else {DEFAULT_CONTEXT_LENGTH}.",
    )
    timeout: float = Field(120.0, gt=0, description="Seconds to wait for one request.")
    max_retries: int = Field(2, ge=0, description="Retries of failed connections / 429 / 5xx.")
    max_concurrency: int = Field(8, ge=1, description="Requests in flight during one call.")
    server_side_stop: bool = Field(
        True, description="Send stop strings to the server (they are applied here as well)."
    )
    vllm_extensions: bool = Field(
        False,
        description="Send top_k, min_new_tokens and repetition_penalty as vLLM extra "
        "parameters instead of refusing them.",
    )
    use_n: bool = Field(
        True, description="Sample a repeated prompt once with n choices instead of n requests."
    )
    stream_usage: bool = Field(
        True, description="Ask for token usage in streams (stream_options.include_usage)."
    )
    options: GenerationOptions = Field(
        default_factory=GenerationOptions, description="Default decoding options of every call."
    )


# ---------------------------------------------------------------------- pure mapping


def openai_request_options(
    opts: GenerationOptions, *, server_side_stop: bool = True, vllm_extensions: bool = False
) -> dict[str, Any]:
    """Keyword arguments of ``chat.completions.create`` / ``completions.create`` for ``opts``.

    Raises :class:`UnsupportedOptionError` for options the API cannot express. The per-request
    parts (prompt, model, ``n``, the offset seed, streaming) are added by the caller.
    """
    if opts.num_beams > 1:
        raise UnsupportedOptionError(
            f"beam search (num_beams={opts.num_beams}) cannot be expressed in the OpenAI API: "
            "use greedy decoding or sampling, or the transformers backend"
        )
    if opts.no_repeat_ngram_size:
        raise UnsupportedOptionError(
            f"no_repeat_ngram_size={opts.no_repeat_ngram_size} has no OpenAI API parameter: "
            "drop it or use the transformers backend"
        )
    extensions: dict[str, Any] = {}
    for name, value, neutral, wire in (
        ("top_k", opts.top_k, None, "top_k"),
        ("min_new_tokens", opts.min_new_tokens, 0, "min_tokens"),
        ("repetition_penalty", opts.repetition_penalty, 1.0, "repetition_penalty"),
    ):
        if value == neutral:
            continue
        if not vllm_extensions:
            raise UnsupportedOptionError(
                f"{name}={value} has no OpenAI API parameter; a vLLM server accepts it as an "
                "extra parameter: set vllm_extensions=True"
            )
        extensions[wire] = value
    kwargs: dict[str, Any] = {"max_tokens": opts.max_new_tokens}
    if opts.do_sample:
        kwargs["temperature"] = opts.temperature if opts.temperature is not None else 1.0
        if opts.top_p is not None:
            kwargs["top_p"] = opts.top_p
        if opts.seed is not None:
            kwargs["seed"] = opts.seed
    else:
        kwargs["temperature"] = 0.0
    if opts.stop and server_side_stop:
        kwargs["stop"] = list(opts.stop)
    if extensions:
        kwargs["extra_body"] = extensions
    return kwargs


def prompt_key(prompt: Prompt) -> str:
    """A hashable identity of a prompt (identical prompts share a request)."""
    if isinstance(prompt, str):
        return json.dumps(prompt)
    return json.dumps([m.model_dump() for m in as_messages(prompt)])


@dataclass(frozen=True)
class PlannedRequest:
    """One HTTP request of a call: which prompt positions it answers and how.

    ``shared``: every position gets choice 0 (identical greedy prompts); otherwise position
    ``indices[j]`` gets choice ``j`` of ``n``.
    """

    indices: tuple[int, ...]
    n: int
    seed: int | None
    shared: bool


def plan_requests(
    prompts: Sequence[Prompt], opts: GenerationOptions, use_n: bool
) -> list[PlannedRequest]:
    """Group a call's prompts into requests (see the module docstring)."""
    seeds = sample_seeds(opts, len(prompts))
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt_key(prompt), []).append(i)
    plan: list[PlannedRequest] = []
    for indices in groups.values():
        if not opts.do_sample:
            plan.append(PlannedRequest(tuple(indices), 1, None, shared=True))
        elif use_n and len(indices) > 1:
            plan.append(PlannedRequest(tuple(indices), len(indices), seeds[indices[0]], False))
        else:
            plan.extend(PlannedRequest((i,), 1, seeds[i], False) for i in indices)
    return plan


# ---------------------------------------------------------------------- errors


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _server_message(exc: Any) -> str:
    """The human part of an error response (OpenAI, vLLM and ragkit all nest it under "error")."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return _first_line(str(inner["message"]))
        if isinstance(inner, str):
            return _first_line(inner)
        if isinstance(inner, Mapping) and inner.get("detail"):  # FastAPI validation errors
            return _first_line(json.dumps(inner["detail"]))[:300]
    return _first_line(str(getattr(exc, "message", "") or exc))


def translate_error(exc: Exception, base_url: str, api_key_env: str) -> RagkitError:
    """Turn an ``openai`` exception into a one-line ragkit error (the key never appears)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return BackendUnavailableError(f"the server at {base_url} did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return BackendUnavailableError(
            f"cannot reach the OpenAI-compatible server at {base_url}: {_first_line(str(cause))}"
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return GeneratorBackendError(
            f"the server at {base_url} refused the API key (read from ${api_key_env}): "
            f"{_server_message(exc)}"
        )
    if isinstance(exc, openai.APIStatusError):
        message = _server_message(exc)
        if exc.status_code in (400, 413, 422) and any(w in message.lower() for w in _CONTEXT_WORDS):
            return ContextLengthError(f"the server at {base_url} says: {message}")
        return GeneratorBackendError(
            f"the server at {base_url} refused the request (HTTP {exc.status_code}): {message}"
        )
    if isinstance(exc, openai.APIError):  # e.g. an error event in the middle of a stream
        return GeneratorBackendError(
            f"the server at {base_url} reported an error: {_server_message(exc)}"
        )
    if isinstance(exc, openai.OpenAIError):
        return GeneratorBackendError(f"OpenAI client error: {_first_line(str(exc))}")
    if isinstance(exc, RagkitError):
        return exc
    raise exc


# ---------------------------------------------------------------------- streaming


class OpenAIStream(Iterator[str]):
    """Server-sent deltas as text pieces, with the transformers stream's guarantees.

    The request is sent on the first ``next``. A tail that could still grow into a stop string
    is held back until the next delta settles it, and the stream ends (closing the connection,
    so the server stops generating) as soon as a stop string appears; the pieces therefore
    concatenate to ``result.text``, which equals what ``generate`` returns for the same prompt.
    """

    def __init__(
        self,
        open_stream: Callable[[], Any],
        finish: Callable[[str, str | None, Any, Any], GenerationResult],
        stops: Sequence[str],
        translate: Callable[[Exception], RagkitError],
        chat: bool,
    ) -> None:
        self._open = open_stream
        self._finish = finish
        self._stops = tuple(stops)
        self._translate = translate
        self._chat = chat
        self._response: Any = None
        self._events: Iterator[Any] | None = None
        self._raw = ""
        self._shown = ""
        self._api_finish: str | None = None
        self._stop_reason: Any = None
        self._usage: Any = None
        self._done = False
        self.result: GenerationResult | None = None
        """The complete result, set once the stream is exhausted."""

    def __iter__(self) -> OpenAIStream:
        return self

    def __enter__(self) -> OpenAIStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving: closing the connection makes the server abort the generation."""
        self._done = True
        response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(Exception):  # already closed or broken: nothing to free
                response.close()

    def _next_chunk(self) -> Any:
        try:
            if self._events is None:
                self._response = self._open()
                self._events = iter(self._response)
            return next(self._events, None)
        except RagkitError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise self._translate(exc) from exc

    def _absorb(self, chunk: Any) -> None:
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self._usage = usage
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            if self._chat:
                delta = getattr(choice, "delta", None)
                piece = getattr(delta, "content", None) if delta is not None else None
            else:
                piece = getattr(choice, "text", None)
            if piece:
                self._raw += piece
            if choice.finish_reason is not None:
                self._api_finish = choice.finish_reason
                self._stop_reason = getattr(choice, "stop_reason", None)

    def _advance(self, visible: str) -> str:
        if not visible.startswith(self._shown):
            return ""
        piece = visible[len(self._shown) :]
        self._shown = visible
        return piece

    def _end(self) -> str:
        self.close()
        self.result = self._finish(self._raw, self._api_finish, self._stop_reason, self._usage)
        piece = self._advance(self.result.text)
        if piece:
            return piece
        raise StopIteration

    def __next__(self) -> str:
        while not self._done:
            chunk = self._next_chunk()
            if chunk is None:
                return self._end()
            self._absorb(chunk)
            if self._stops and find_stop(self._raw, self._stops) is not None:
                return self._end()
            piece = self._advance(self._raw[: len(self._raw) - held_back(self._raw, self._stops)])
            if piece:
                return piece
        raise StopIteration


# ---------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _Choice:
    text: str
    api_finish: str | None
    stop_reason: Any


class OpenAIGenerator:
    """Generation through an OpenAI-compatible HTTP API (see the module docstring).

    >>> gen = OpenAIGenerator("Qwen/Qwen2.5-7B-Instruct", "http://gpu-box:8000/v1")
    >>> gen.generate(["What is the capital of France?"], max_new_tokens=16)[0].text
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        tokenizer: str | None = None,
        context_length: int | None = None,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_concurrency: int = 8,
        server_side_stop: bool = True,
        vllm_extensions: bool = False,
        use_n: bool = True,
        stream_usage: bool = True,
    ) -> None:
        self.config = OpenAIGeneratorConfig(
            model=model,
            base_url=base_url,
            api_key_env=api_key_env,
            tokenizer=tokenizer,
            context_length=context_length,
            timeout=timeout,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
            server_side_stop=server_side_stop,
            vllm_extensions=vllm_extensions,
            use_n=use_n,
            stream_usage=stream_usage,
            options=GenerationOptions.coerce(options, {}),
        )
        self._api_key = (
            api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        )
        self._lock = threading.RLock()
        self._client: Any = None
        self._models: list[Any] | None = None
        self._model: str | None = model
        self._ready = False
        self.tokens = TokenAccounting(
            tokenizer, context_length, self._reported_context_length, DEFAULT_CONTEXT_LENGTH
        )

    @classmethod
    def from_config(
        cls, config: OpenAIGeneratorConfig | Mapping[str, Any], **secrets: Any
    ) -> OpenAIGenerator:
        """Rebuild from a config (e.g. a saved pipeline); ``api_key=`` may be passed again."""
        cfg = (
            config
            if isinstance(config, OpenAIGeneratorConfig)
            else OpenAIGeneratorConfig.model_validate(config)
        )
        data = cfg.model_dump(exclude={"backend", "options"})
        return cls(**data, options=cfg.options, **secrets)

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self.config.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL

    def __repr__(self) -> str:
        state = "connected" if self._ready else "not connected"
        return f"OpenAIGenerator(model={self.config.model!r}, base_url={self.base_url!r}, {state})"

    # ------------------------------------------------------------------ connection

    def _translate(self, exc: Exception) -> RagkitError:
        return translate_error(exc, self.base_url, self.config.api_key_env)

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client (created, and the package imported, on first use)."""
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as exc:
                    raise BackendUnavailableError(
                        f"the openai backend needs the openai package: {INSTALL_HINT}"
                    ) from exc
                key = (
                    self._api_key.get_secret_value()
                    if self._api_key is not None
                    else os.environ.get(self.config.api_key_env)
                )
                self._client = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=key or NO_API_KEY,
                    timeout=self.config.timeout,
                    max_retries=self.config.max_retries,
                )
            return self._client

    def _server_models(self) -> list[Any]:
        """``GET /models`` (cached); [] for servers without it."""
        import openai

        with self._lock:
            if self._models is None:
                try:
                    self._models = list(self.client.models.list())
                except (openai.NotFoundError, openai.UnprocessableEntityError):
                    self._models = []
                except Exception as exc:
                    raise self._translate(exc) from exc
            return self._models

    @property
    def model_name(self) -> str:
        """The model requests name: configured, else the first one the server lists."""
        with self._lock:
            if self._model is None:
                models = self._server_models()
                if not models:
                    raise GeneratorBackendError(
                        f"no model given and the server at {self.base_url} lists none: "
                        "pass model= (--generator MODEL)"
                    )
                self._model = str(models[0].id)
            return self._model

    def _reported_context_length(self) -> int | None:
        for entry in self._server_models():
            if str(entry.id) == self.model_name:
                value = getattr(entry, "max_model_len", None)
                if value is None:
                    value = (getattr(entry, "model_extra", None) or {}).get("max_model_len")
                return int(value) if isinstance(value, int) and value > 0 else None
        return None

    @property
    def is_loaded(self) -> bool:
        """Whether :meth:`warm_up` reached the server."""
        return self._ready

    def warm_up(self) -> OpenAIGenerator:
        """Connect now (fail fast when the server is down or the model unknown)."""
        self._server_models()
        self.model_name  # noqa: B018 - resolves the model (may ask the server)
        self._ready = True
        return self

    # ------------------------------------------------------------------ tokens

    @property
    def context_length(self) -> int:
        """Tokens the served model attends to (see ``context_length`` in the config)."""
        return self.tokens.context_length()

    def max_prompt_tokens(
        self, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> int:
        """The longest prompt (in tokens) that leaves room for the answer."""
        opts = resolve_options(self.config.options, options, {})
        return max(0, self.context_length - opts.max_new_tokens)

    def count_tokens(self, prompt: Prompt, apply_chat_template: bool | None = None) -> int:
        """Tokens of ``prompt``: exact with ``tokenizer=``, else an over-leaning estimate."""
        return self.tokens.count(prompt, apply_chat_template)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` within ``max_tokens`` (by the same counting)."""
        return self.tokens.truncate(text, max_tokens)

    # ------------------------------------------------------------------ generation

    def _request_kwargs(
        self, prompt: Prompt, opts: GenerationOptions
    ) -> tuple[bool, dict[str, Any]]:
        """(chat endpoint?, create() kwargs without n/seed) for one prompt."""
        kwargs = openai_request_options(
            opts,
            server_side_stop=self.config.server_side_stop,
            vllm_extensions=self.config.vllm_extensions,
        )
        kwargs.pop("seed", None)
        kwargs["model"] = self.model_name
        if opts.apply_chat_template is False:
            text = prompt if isinstance(prompt, str) else plain_transcript(as_messages(prompt))
            kwargs["prompt"] = text
            return False, kwargs
        if isinstance(prompt, str):
            kwargs["messages"] = [{"role": "user", "content": prompt}]
        else:
            kwargs["messages"] = [m.model_dump() for m in as_messages(prompt)]
        return True, kwargs

    def _create(self, chat: bool, kwargs: dict[str, Any]) -> Any:
        endpoint = self.client.chat.completions if chat else self.client.completions
        try:
            return endpoint.create(**kwargs)
        except Exception as exc:
            if not chat and getattr(exc, "status_code", None) == 404:
                raise GeneratorBackendError(
                    f"the server at {self.base_url} answered 404 to /completions "
                    f"({_server_message(exc)}); prompts sent verbatim (apply_chat_template=False) "
                    "need a server with that endpoint, such as vllm serve"
                ) from exc
            raise self._translate(exc) from exc

    def _choices(self, response: Any, chat: bool) -> list[_Choice]:
        choices = sorted(response.choices, key=lambda c: getattr(c, "index", 0))
        out = []
        for choice in choices:
            text = (choice.message.content if chat else choice.text) or ""
            out.append(_Choice(text, choice.finish_reason, getattr(choice, "stop_reason", None)))
        return out

    def _result(
        self,
        prompt: Prompt,
        opts: GenerationOptions,
        text: str,
        api_finish: str | None,
        stop_reason: Any,
        usage: Any,
        single: bool,
    ) -> GenerationResult:
        """A :class:`GenerationResult` with the server's usage when it is per-choice."""
        cut, reason, stop = finish_text(text, api_finish, stop_reason, opts.stop)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None) if single else None
        if not isinstance(prompt_tokens, int):
            prompt_tokens = self.count_tokens(prompt, opts.apply_chat_template)
        if not isinstance(completion_tokens, int):
            completion_tokens = self.tokens.count_text(text) if text else 0
        return GenerationResult(
            text=cut,
            prompt_text=self.tokens.render(prompt, opts.apply_chat_template),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=reason,
            stop_string=stop,
        )

    def _run(
        self, prompts: list[Prompt], opts: GenerationOptions, planned: PlannedRequest
    ) -> list[tuple[int, GenerationResult]]:
        prompt = prompts[planned.indices[0]]
        chat, kwargs = self._request_kwargs(prompt, opts)
        if planned.n > 1:
            kwargs["n"] = planned.n
        if planned.seed is not None:
            kwargs["seed"] = planned.seed
        response = self._create(chat, kwargs)
        choices = self._choices(response, chat)
        if len(choices) < (1 if planned.shared else planned.n):
            raise GeneratorBackendError(
                f"the server at {self.base_url} returned {len(choices)} choices for n={planned.n}"
            )
        usage = getattr(response, "usage", None)
        out = []
        for j, i in enumerate(planned.indices):
            c = choices[0 if planned.shared else j]
            single = planned.shared or planned.n == 1
            result = self._result(prompt, opts, c.text, c.api_finish, c.stop_reason, usage, single)
            out.append((i, result))
        return out

    def generate(
        self,
        prompts: Sequence[Prompt],
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> list[GenerationResult]:
        """Complete every prompt; results are in the order of ``prompts``.

        Options: the backend's defaults, then ``options``, then keyword overrides (as the
        transformers backend). ``batch_size`` caps the requests in flight for this call.
        """
        items = check_prompts(prompts)
        opts = resolve_options(self.config.options, options, overrides)
        if not items:
            return []
        plan = plan_requests(items, opts, self.config.use_n)
        self.model_name  # noqa: B018 - resolve once, before the threads start
        results: list[GenerationResult | None] = [None] * len(items)
        workers = min(len(plan), opts.batch_size or self.config.max_concurrency)
        if workers == 1:
            done = [self._run(items, opts, p) for p in plan]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="ragkit-openai") as pool:
                done = list(pool.map(lambda p: self._run(items, opts, p), plan))
        for pairs in done:
            for i, result in pairs:
                results[i] = result
        return [r for r in results if r is not None]

    def stream(
        self,
        prompt: Prompt,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> OpenAIStream:
        """Stream one completion from the server's SSE deltas (see :class:`OpenAIStream`)."""
        opts = resolve_options(self.config.options, options, overrides)
        chat, kwargs = self._request_kwargs(prompt, opts)
        seed = sample_seeds(opts, 1)[0]
        if seed is not None:
            kwargs["seed"] = seed
        kwargs["stream"] = True
        if self.config.stream_usage:
            kwargs["stream_options"] = {"include_usage": True}

        def finish(
            text: str, api_finish: str | None, stop_reason: Any, usage: Any
        ) -> GenerationResult:
            return self._result(prompt, opts, text, api_finish, stop_reason, usage, True)

        return OpenAIStream(
            lambda: self._create(chat, kwargs), finish, opts.stop, self._translate, chat
        )
