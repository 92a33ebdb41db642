"""A generator backend on vLLM's in-process engine (``vllm.LLM``): fast batched GPU generation.

vLLM (paged attention, continuous batching, CUDA graphs) generates many times faster than
``transformers.generate`` on a GPU, which matters for large evaluation runs and for RLHF rollouts.
It is an optional extra (``pip install 'ragkit[vllm]'``, Linux + CUDA) imported on first use.

Decisions (also in docs/backends.md):

- **Prompts are rendered and tokenized by ragkit**, with the same chat-template rules as the
  transformers backend (``render_prompt``), and handed to vLLM as token ids. So both backends
  read exactly the same tokens, ``prompt_text`` in results and traces is exact, and the RAG
  prompt builder's token budget (computed with the same tokenizer, without starting the engine)
  holds.
- **Options map or fail**: greedy is ``temperature=0``; sampling maps ``temperature``, ``top_p``,
  ``top_k`` and a per-prompt ``seed`` (``seed + i``, as in the OpenAI backend); ``stop``,
  ``min_new_tokens`` and ``repetition_penalty`` have direct equivalents. Beam search (a separate
  vLLM API) and ``no_repeat_ngram_size`` raise :class:`UnsupportedOptionError`.
- **Streaming** yields the finished answer as one piece: the offline ``LLM`` engine has no
  incremental output. For token-by-token streams from vLLM, run ``vllm serve`` and use the
  OpenAI backend.
- The engine is not thread-safe: calls are serialised by a lock (the engine batches each call's
  prompts internally, so concurrency would add nothing).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragkit.generation.backends.base import (
    BackendUnavailableError,
    FinishedStream,
    UnsupportedOptionError,
    check_prompts,
    finish_text,
    package_installed,
    resolve_options,
    sample_seeds,
)
from ragkit.generation.backends.tokens import TokenAccounting
from ragkit.generation.chat import Prompt, RenderedPrompt
from ragkit.generation.generator import prepare_prompts
from ragkit.generation.options import GenerationOptions
from ragkit.generation.results import GenerationResult

INSTALL_HINT = "pip install 'ragkit[vllm]' (Linux with a CUDA GPU)"
NO_GPU_HINT = (
    "use --generator-backend transformers on this machine, or run `vllm serve MODEL` on a GPU "
    "machine and use --generator-backend openai --base-url http://HOST:8000/v1"
)


class VLLMGeneratorConfig(BaseModel):
    """The vLLM backend's settings: what a saved pipeline records to rebuild it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["vllm"] = "vllm"
    model: str | None = Field(
        None, description="None/'default' (packaged SmolLM2), a hub id or a model folder."
    )
    dtype: str | None = Field(None, description="None/'auto', 'bfloat16', 'float16'...")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is sharded over.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take (weights + KV cache)."
    )
    max_model_len: int | None = Field(
        None, ge=1, description="Context length; None: the model's (lower it to save memory)."
    )
    enforce_eager: bool = Field(False, description="Skip CUDA graph capture (faster start).")
    require_gpu: bool = Field(
        True, description="Fail early without CUDA; False for vLLM's CPU or other builds."
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="More keyword arguments for vllm.LLM."
    )
    options: GenerationOptions = Field(
        default_factory=GenerationOptions, description="Default decoding options of every call."
    )


# ---------------------------------------------------------------------- pure mapping


def vllm_sampling_kwargs(opts: GenerationOptions) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``opts`` (without the seed).

    Every field that changes decoding is set explicitly, so neither vLLM's defaults nor the
    model's ``generation_config.json`` can change what the caller asked for.
    """
    if opts.num_beams > 1:
        raise UnsupportedOptionError(
            f"beam search (num_beams={opts.num_beams}) is not mapped to vLLM's separate "
            "beam-search API: use greedy decoding or sampling, or the transformers backend"
        )
    if opts.no_repeat_ngram_size:
        raise UnsupportedOptionError(
            f"no_repeat_ngram_size={opts.no_repeat_ngram_size} has no vLLM sampling parameter: "
            "drop it or use the transformers backend"
        )
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": opts.max_new_tokens,
        "min_tokens": opts.min_new_tokens,
        "repetition_penalty": opts.repetition_penalty,
        "stop": list(opts.stop),
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "top_p": 1.0,
    }
    if opts.do_sample:
        kwargs["temperature"] = opts.temperature if opts.temperature is not None else 1.0
        if opts.top_p is not None:
            kwargs["top_p"] = opts.top_p
        if opts.top_k is not None:
            kwargs["top_k"] = opts.top_k
    else:
        kwargs["temperature"] = 0.0
    return kwargs


def vllm_engine_kwargs(config: VLLMGeneratorConfig, source: str) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``config`` and a resolved model ``source``."""
    kwargs: dict[str, Any] = {
        "model": source,
        "tokenizer": source,
        "dtype": config.dtype or "auto",
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": config.enforce_eager,
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    kwargs.update(config.engine_options)
    return kwargs


def vllm_result(
    output: Any, prompt_text: str, prompt_tokens: int, opts: GenerationOptions
) -> GenerationResult:
    """A :class:`GenerationResult` from one ``vllm.RequestOutput``.

    vLLM's ``token_ids`` include a final EOS, as ragkit's ``completion_tokens`` do; its text
    already excludes a matched stop string (reported in ``stop_reason``).
    """
    completion = output.outputs[0]
    text = completion.text or ""
    cut, reason, stop = finish_text(
        text, completion.finish_reason, getattr(completion, "stop_reason", None), opts.stop
    )
    return GenerationResult(
        text=cut,
        prompt_text=prompt_text,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(completion.token_ids or ()),
        finish_reason=reason,
        stop_string=stop,
    )


def vllm_installed() -> bool:
    """Whether ``import vllm`` can work, without importing it (that takes seconds)."""
    return package_installed("vllm")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------- the backend


class VLLMGenerator:
    """Generation with an in-process ``vllm.LLM`` engine (see the module docstring).

    Constructing it checks that vLLM is installed (without importing it); the engine starts on
    the first generation or :meth:`warm_up`. Token counting needs only the tokenizer.

    >>> gen = VLLMGenerator("Qwen/Qwen2.5-1.5B-Instruct", gpu_memory_utilization=0.5)
    >>> gen.generate(["What is the capital of France?"] * 64, max_new_tokens=16)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        require_gpu: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        options: GenerationOptions | Mapping[str, Any] | None = None,
    ) -> None:
        if not vllm_installed():
            raise BackendUnavailableError(
                f"the vllm backend needs vLLM, which is not installed: {INSTALL_HINT}"
            )
        self.config = VLLMGeneratorConfig(
            model=model,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            require_gpu=require_gpu,
            engine_options=dict(engine_options or {}),
            options=GenerationOptions.coerce(options, {}),
        )
        self._lock = threading.RLock()
        self._llm: Any = None
        self._vllm: Any = None
        self.tokens = TokenAccounting(
            model or "default", max_model_len, self._engine_context_length, 2048
        )

    @classmethod
    def from_config(cls, config: VLLMGeneratorConfig | Mapping[str, Any]) -> VLLMGenerator:
        """Rebuild from a config (e.g. read from a saved pipeline)."""
        cfg = (
            config
            if isinstance(config, VLLMGeneratorConfig)
            else VLLMGeneratorConfig.model_validate(config)
        )
        return cls(**cfg.model_dump(exclude={"backend", "options"}), options=cfg.options)

    def __repr__(self) -> str:
        state = "loaded" if self._llm is not None else "not loaded"
        return f"VLLMGenerator(model={self.config.model!r}, {state})"

    # ------------------------------------------------------------------ engine

    @property
    def source(self) -> str:
        """What the engine loads: the resolved model folder or hub id (as transformers)."""
        assert self.tokens.local is not None
        return str(self.tokens.local.source)

    def engine(self) -> tuple[Any, Any]:
        """``(vllm module, vllm.LLM)``, importing vLLM and starting the engine on first use
        (public for callers that drive vLLM directly, such as PPO's rollout engine, which also
        pushes weights into it)."""
        with self._lock:
            if self._llm is None:
                try:  # import_module: vLLM is optional, and mypy must not need its stubs
                    vllm = importlib.import_module("vllm")
                except ImportError as exc:
                    raise BackendUnavailableError(
                        f"the vllm backend cannot import vLLM ({_first_line(exc)}): {INSTALL_HINT}"
                    ) from exc
                if self.config.require_gpu:
                    import torch

                    if not torch.cuda.is_available():
                        raise BackendUnavailableError(
                            f"the vllm backend needs a CUDA GPU and none is visible; {NO_GPU_HINT}"
                        )
                source = self.source
                try:
                    llm = vllm.LLM(**vllm_engine_kwargs(self.config, source))
                except (ValueError, RuntimeError, OSError) as exc:
                    raise BackendUnavailableError(
                        f"vLLM could not start an engine for {source}: {_first_line(exc)}"
                    ) from exc
                self._vllm, self._llm = vllm, llm
            return self._vllm, self._llm

    def _engine_context_length(self) -> int | None:
        """The running engine's ``max_model_len`` (None before it starts)."""
        if self._llm is None:
            return None
        engine = getattr(self._llm, "llm_engine", None)
        value = getattr(getattr(engine, "model_config", None), "max_model_len", None)
        return value if isinstance(value, int) and value > 0 else None

    @property
    def is_loaded(self) -> bool:
        """Whether the engine is running."""
        return self._llm is not None

    def warm_up(self) -> VLLMGenerator:
        """Start the engine now (allocates the GPU memory) instead of on the first call."""
        self.engine()
        return self

    # ------------------------------------------------------------------ tokens

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded without the engine)."""
        return self.tokens.tokenizer

    @property
    def context_length(self) -> int:
        """Tokens the model attends to: ``max_model_len``, else the engine's, else the config's."""
        return self.tokens.context_length()

    def max_prompt_tokens(
        self, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> int:
        """The longest prompt (in tokens, after templating) that leaves room for the answer."""
        opts = resolve_options(self.config.options, options, {})
        return max(0, self.context_length - opts.max_new_tokens)

    def count_tokens(self, prompt: Prompt, apply_chat_template: bool | None = None) -> int:
        """Tokens of ``prompt`` as :meth:`generate` would send it."""
        return self.tokens.count(prompt, apply_chat_template)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` covered by its first ``max_tokens`` tokens."""
        return self.tokens.truncate(text, max_tokens)

    def render(self, prompt: Prompt, apply_chat_template: bool | None = None) -> str:
        """The exact text the engine reads for ``prompt``."""
        return self.tokens.render(prompt, apply_chat_template)

    def _encode(self, rendered: RenderedPrompt) -> list[int]:
        ids = self.tokenizer(rendered.text, add_special_tokens=rendered.add_special_tokens)
        return list(ids["input_ids"])

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[Prompt],
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> list[GenerationResult]:
        """Complete every prompt in one engine call; results are in the order of ``prompts``."""
        items = check_prompts(prompts)
        opts = resolve_options(self.config.options, options, overrides)
        if not items:
            return []
        sampling = vllm_sampling_kwargs(opts)  # refuses unsupported options before any work
        rendered, encoded = prepare_prompts(
            items, opts, self.tokenizer, self._encode, self.context_length
        )
        vllm, llm = self.engine()
        params = [
            vllm.SamplingParams(**sampling, **({} if seed is None else {"seed": seed}))
            for seed in sample_seeds(opts, len(items))
        ]
        with self._lock:
            outputs = llm.generate(
                [{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False
            )
        return [
            vllm_result(out, r.text, len(ids), opts)
            for out, r, ids in zip(outputs, rendered, encoded, strict=True)
        ]

    def stream(
        self,
        prompt: Prompt,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> FinishedStream:
        """The finished answer as a single piece (the offline engine cannot stream)."""
        opts = resolve_options(self.config.options, options, overrides)
        vllm_sampling_kwargs(opts)  # fail now, not on the first next()
        return FinishedStream(lambda: self.generate([prompt], opts)[0])
