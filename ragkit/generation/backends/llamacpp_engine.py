"""A generator backend on llama.cpp: the packaged GGUF runs with its quantised kernels, on CPU.

Why: ragkit's transformers path de-quantises the 4-bit GGUF to fp32, and decoding a small model
on a CPU is bound by memory traffic, so it decodes ~5x slower than llama.cpp on the same file
(benchmarks/README.md, "Generation latency"). This backend keeps every ragkit feature that decides
an answer while llama.cpp runs the forward passes (docs/backends.md):

- **grounded span decoding**: the row's :class:`TokenConstraint` masks each step's logits, and
  :meth:`LlamaCppGenerator.token_table` gives the span automaton this vocabulary's bytes;
- **adapters**: a LoRA adapter is merged into a cached copy of the GGUF (its linear layers f16)
  (:mod:`ragkit.generation.gguf_merge`), since llama.cpp reads weights only from the file;
- **the answerability probe** of an adapter, when it reads the final hidden state: llama.cpp
  gives that as the "embedding" of the prompt's last token (a probe of an inner layer is
  refused in one line: llama.cpp does not expose inner layers);
- **the same decoding semantics** as the transformers path (:mod:`ragkit.generation.token_choice`,
  :func:`ragkit.generation.results.result_from_tokens`): greedy is argmax, stop strings cut the
  text the same way, streaming holds back partial stop strings (:class:`TextStream`);
- **prompts**: rendered by ``render_prompt`` with the GGUF's own chat template and tokenized by
  llama.cpp's tokenizer (the same ids as the transformers tokenizer on the packaged models).

Decisions: a batch runs its prompts one after another, each reusing the KV cache of the prefix it
shares with the previous one (llama-cpp-python holds one sequence; on a 2-core CPU batching buys
little once decoding is no longer memory-bound). Beam search is refused
(:class:`UnsupportedOptionError`). Calls are serialised by a lock (one KV cache). PPO rollouts stay
on the transformers path, which also gives log-probabilities and gradients.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragkit.generation.answerability import AnswerabilityProbe, ProbeError
from ragkit.generation.backends.base import (
    BackendUnavailableError,
    GeneratorBackendError,
    UnsupportedOptionError,
    check_prompts,
    package_installed,
    resolve_options,
    sample_seeds,
)
from ragkit.generation.backends.llamacpp_model import (
    MISSING,
    LlamaCppModel,
    LlamaModel,
)
from ragkit.generation.backends.llamacpp_vocab import Vocabulary
from ragkit.generation.chat import Prompt, RenderedPrompt, render_prompt
from ragkit.generation.chat_template import TemplateTokenizer
from ragkit.generation.constraints import (
    ObservesAnswerability,
    TokenConstraint,
    check_constraints,
)
from ragkit.generation.generator import prepare_prompts
from ragkit.generation.grounded import TokenTable, table_from_pieces
from ragkit.generation.options import GenerationOptions
from ragkit.generation.results import GenerationResult, result_from_tokens
from ragkit.generation.stopping import find_stop, token_window
from ragkit.generation.streaming import QueueStreamer, TextStream
from ragkit.generation.token_choice import choose_token

DEFAULT_CONTEXT = 4096
"""KV-cache size when not configured: a RAG prompt is ~700 tokens; 4096 leaves ample room while
the cache of a 32k-context model would cost memory for nothing."""

ModelLoader = Callable[[Path, int, int | None], LlamaCppModel]


class LlamaCppGeneratorConfig(BaseModel):
    """The llama.cpp backend's settings: what a saved pipeline records to rebuild it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field("llamacpp", description="Always 'llamacpp' (selects this backend).")
    model: str | None = Field(
        None, description="None/'default' (the packaged default), a packaged name or a .gguf file."
    )
    adapter: str | None = Field(
        None,
        description="A LoRA adapter merged into a cached copy of the GGUF (packaged name or folder).",
    )
    n_threads: int | None = Field(None, ge=1, description="CPU threads (None: all cores).")
    n_ctx: int | None = Field(
        None, ge=16, description=f"Context (KV cache) in tokens; None: {DEFAULT_CONTEXT} or less."
    )
    options: GenerationOptions = Field(
        default_factory=GenerationOptions, description="Default decoding options of every call."
    )


def resolve_gguf(model: str | None) -> Path:
    """The GGUF file ``model`` names: a packaged model (None/'default' too) or a ``.gguf`` path."""
    from ragkit.generation.checkpoints import packaged_model_gguf

    packaged = packaged_model_gguf(model)
    if packaged is not None:
        return packaged
    assert model is not None  # None is the packaged default
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return path
        raise GeneratorBackendError(f"GGUF file not found: {path}")
    raise GeneratorBackendError(
        f"the llamacpp backend reads GGUF files: {model!r} is neither a packaged model "
        "nor a .gguf file (use --generator-backend transformers for hub ids and folders)"
    )


def _load_llama(path: Path, n_ctx: int, n_threads: int | None) -> LlamaCppModel:
    return LlamaModel(path, n_ctx=n_ctx, n_threads=n_threads)


class LlamaCppGenerator:
    """:class:`GeneratorBackend` running a GGUF with llama.cpp (``pip install 'ragkit[llamacpp]'``).

    Nothing loads at construction; the model loads on the first call that needs it (counting
    tokens included) or on :meth:`warm_up`. ``loader`` replaces llama.cpp (tests use a fake).
    """

    loads_in_background = True
    """Loading is native code and imports nothing heavy: safe to overlap with other start-up
    work in a thread (:meth:`ragkit.rag.RAGPipeline.preload`)."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        adapter: str | os.PathLike[str] | None = None,
        n_threads: int | None = None,
        n_ctx: int | None = None,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        loader: ModelLoader | None = None,
    ) -> None:
        model_name = os.fspath(model) if model is not None else None
        if adapter is not None:
            from ragkit.generation.adapters import packaged_adapter_name, resolve_adapter

            adapter = packaged_adapter_name(os.fspath(adapter), model_name)
            resolve_adapter(adapter)  # a wrong name fails now, not at the first question
        self.config = LlamaCppGeneratorConfig(
            model=model_name,
            adapter=os.fspath(adapter) if adapter is not None else None,
            n_threads=n_threads,
            n_ctx=n_ctx,
            options=GenerationOptions.coerce(options, {}),
        )
        if loader is None and not package_installed("llama_cpp"):
            # now, before retrieval, not at the first answer
            raise BackendUnavailableError(MISSING)
        self._loader = loader or _load_llama
        self._lock = threading.RLock()
        self._model: LlamaCppModel | None = None
        self._vocab: Vocabulary | None = None
        self._table: TokenTable | None = None
        self._template: TemplateTokenizer | None = None
        self.backend_verdict: Any = None
        """Why ``--generator-backend auto`` chose this backend (None when it was asked for)."""
        self.answerability_probe: AnswerabilityProbe | None = None
        """The adapter's answerability probe, read at load (None: the adapter has none)."""

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "not loaded"
        adapter = f", adapter={self.config.adapter!r}" if self.config.adapter else ""
        return f"LlamaCppGenerator(model={self.config.model!r}{adapter}, {state})"

    # ------------------------------------------------------------------ loading

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def gguf_path(self) -> Path:
        """The file llama.cpp loads: the model's GGUF, or its adapter-merged copy."""
        base = resolve_gguf(self.config.model)
        if self.config.adapter is None:
            return base
        from ragkit.generation.gguf_merge import merged_gguf

        return merged_gguf(base, self.config.adapter)

    def warm_up(self) -> LlamaCppGenerator:
        """Load the GGUF (merging the adapter first, once per adapter version) and its vocabulary."""
        with self._lock:
            if self._model is None:
                model = self._loader(
                    self.gguf_path(), self.config.n_ctx or DEFAULT_CONTEXT, self.config.n_threads
                )
                vocab = model.vocabulary()
                self.answerability_probe = self._probe_for(model)
                self._vocab = vocab
                self._template = self._template_of(model, vocab)
                self._model = model
        return self

    def _probe_for(self, model: LlamaCppModel) -> AnswerabilityProbe | None:
        """The adapter's probe, if it reads what llama.cpp gives: the final hidden state."""
        if self.config.adapter is None:
            return None
        from ragkit.generation.adapters import resolve_adapter

        probe = AnswerabilityProbe.load(resolve_adapter(self.config.adapter))
        if probe is not None and probe.layer != model.layer_count:
            raise ProbeError(
                f"the adapter's answerability probe reads hidden state {probe.layer}; the "
                f"llama.cpp backend gives only the final one ({model.layer_count}): use "
                "--generator-backend transformers"
            )
        return probe

    @staticmethod
    def _template_of(model: LlamaCppModel, vocab: Vocabulary) -> TemplateTokenizer:
        return TemplateTokenizer(
            model.metadata.get("tokenizer.chat_template"),
            bos_token=vocab.bos_text,
            eos_token=vocab.eos_text,
        )

    def _loaded(self) -> tuple[LlamaCppModel, Vocabulary]:
        self.warm_up()
        assert self._model is not None and self._vocab is not None
        return self._model, self._vocab

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Ids that end generation: llama.cpp's end-of-generation tokens of this vocabulary."""
        return self._loaded()[1].eos_ids

    @property
    def tokenizer(self) -> TemplateTokenizer:
        """What ``render_prompt`` needs: the model's chat template (None for base models)."""
        self.warm_up()
        assert self._template is not None
        return self._template

    def token_table(self) -> TokenTable:
        """This vocabulary's bytes per token, for grounded span decoding (built once)."""
        with self._lock:
            if self._table is None:
                self._table = table_from_pieces(self._loaded()[1].pieces)
            return self._table

    # ------------------------------------------------------------------ tokens

    @property
    def context_length(self) -> int:
        return self._loaded()[0].context_length

    def max_prompt_tokens(
        self, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> int:
        opts = resolve_options(self.config.options, options, {})
        return max(0, self.context_length - opts.max_new_tokens)

    def render(self, prompt: Prompt, apply_chat_template: bool | None = None) -> str:
        return render_prompt(self.tokenizer, prompt, apply_chat_template).text

    def _encode(self, rendered: RenderedPrompt) -> list[int]:
        model, vocab = self._loaded()
        return model.tokenize(rendered.text, add_bos=rendered.add_special_tokens and vocab.add_bos)

    def count_tokens(self, prompt: Prompt, apply_chat_template: bool | None = None) -> int:
        return len(self._encode(render_prompt(self.tokenizer, prompt, apply_chat_template)))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` covered by its first ``max_tokens`` tokens.

        Cut where those tokens' bytes end, so the result is an exact prefix of ``text`` (as the
        transformers path cuts at its tokenizer's offsets).
        """
        if max_tokens <= 0:
            return ""
        model, _ = self._loaded()
        ids = model.tokenize(text, add_bos=False)
        if len(ids) <= max_tokens:
            return text
        data = text.encode("utf-8")
        head = self._bytes(ids[:max_tokens])
        if not data.startswith(head) and head[:1] == b" " and data.startswith(head[1:]):
            head = head[1:]  # a tokenizer that adds a space prefix
        if data.startswith(head):
            return data[: len(head)].decode("utf-8", errors="ignore")
        # the pieces do not spell the text (normalisation): the longest prefix that fits
        low, high = 0, len(text)
        while high - low > 1:
            middle = (low + high) // 2
            if len(model.tokenize(text[:middle], add_bos=False)) <= max_tokens:
                low = middle
            else:
                high = middle
        return text[:low]

    def _bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes ``ids`` write (control tokens and unknown ids write nothing)."""
        pieces = self._loaded()[1].pieces
        return b"".join(pieces[i] or b"" for i in ids if 0 <= i < len(pieces))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids (control tokens write nothing)."""
        return self._bytes(ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ generation

    def _prepare(
        self, prompts: Sequence[Prompt], opts: GenerationOptions
    ) -> tuple[list[RenderedPrompt], list[list[int]]]:
        if opts.num_beams > 1:
            raise UnsupportedOptionError(
                "the llamacpp backend does not do beam search (num_beams > 1); "
                "use greedy decoding or sampling, or --generator-backend transformers"
            )
        return prepare_prompts(
            prompts,
            opts,
            self.tokenizer,
            self._encode,
            self.context_length,
            where="the llamacpp context (n_ctx)",
        )

    def generate(
        self,
        prompts: Sequence[Prompt],
        options: GenerationOptions | Mapping[str, Any] | None = None,
        *,
        constraints: Sequence[TokenConstraint | None] | None = None,
        **overrides: Any,
    ) -> list[GenerationResult]:
        """Complete every prompt, in order; the same contract as :meth:`Generator.generate`."""
        prompts = check_prompts(prompts)
        opts = resolve_options(self.config.options, options, overrides)
        if not prompts:
            return []
        check_constraints(constraints, len(prompts))
        rendered, encoded = self._prepare(prompts, opts)
        seeds = sample_seeds(opts, len(prompts))
        results = []
        for i, (text, ids) in enumerate(zip(rendered, encoded, strict=True)):
            new_ids = self._complete(ids, opts, constraints[i] if constraints else None, seeds[i])
            results.append(self._result(text, ids, new_ids, opts))
        return results

    def stream(
        self,
        prompt: Prompt,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        *,
        constraint: TokenConstraint | None = None,
        **overrides: Any,
    ) -> TextStream:
        """Text pieces as llama.cpp produces tokens; they concatenate to :meth:`generate`'s text."""
        opts = resolve_options(self.config.options, options, overrides)
        (rendered,), (prompt_ids,) = self._prepare([prompt], opts)
        (seed,) = sample_seeds(opts, 1)

        def run(streamer: QueueStreamer, is_cancelled: Callable[[], bool]) -> None:
            streamer.put(np.asarray(prompt_ids))
            self._complete(
                prompt_ids,
                opts,
                constraint,
                seed,
                on_token=lambda token: streamer.put(np.asarray([token])),
                is_cancelled=is_cancelled,
            )

        return TextStream(
            run=run,
            decode=self.decode,
            finish=lambda new_ids: self._result(rendered, prompt_ids, new_ids, opts),
            stops=opts.stop,
            terminators=self.eos_token_ids,
        )

    def _complete(
        self,
        prompt_ids: list[int],
        opts: GenerationOptions,
        constraint: TokenConstraint | None,
        seed: int | None,
        *,
        on_token: Callable[[int], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> list[int]:
        """Decode one prompt token by token; stops at EOS, a stop string or the length limit."""
        model, vocab = self._loaded()
        rng = np.random.default_rng(seed) if opts.do_sample else None
        window = token_window(opts.stop)
        generated: list[int] = []
        probe = self.answerability_probe
        with self._lock:
            if probe is not None and isinstance(constraint, ObservesAnswerability):
                constraint.observe_answerability(probe.probability(model.final_state(prompt_ids)))
            for _ in range(opts.max_new_tokens):
                if is_cancelled is not None and is_cancelled():
                    break
                sequence = prompt_ids + generated
                token = choose_token(
                    model.logits(sequence),
                    opts,
                    sequence=sequence,
                    generated=generated,
                    eos_ids=vocab.eos_ids,
                    constraint=constraint,
                    rng=rng,
                )
                generated.append(token)
                if on_token is not None:
                    on_token(token)
                if token in vocab.eos_ids:
                    break
                if opts.stop and find_stop(self.decode(generated[-window:]), opts.stop):
                    break
        return generated

    def _result(
        self,
        rendered: RenderedPrompt,
        prompt_ids: list[int],
        new_ids: list[int],
        opts: GenerationOptions,
    ) -> GenerationResult:
        eos = self.eos_token_ids
        return result_from_tokens(
            new_ids,
            prompt_text=rendered.text,
            prompt_tokens=len(prompt_ids),
            stops=opts.stop,
            decode=self.decode,
            terminators=eos,
            eos_ids=eos,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LlamaCppGenerator:
        """Rebuild from ``config.model_dump()`` (the ``backend`` key is optional)."""
        data = dict(config)
        data.pop("backend", None)
        cfg = LlamaCppGeneratorConfig.model_validate(data)
        return cls(
            cfg.model,
            adapter=cfg.adapter,
            n_threads=cfg.n_threads,
            n_ctx=cfg.n_ctx,
            options=cfg.options,
        )
