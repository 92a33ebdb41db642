"""The causal-LM generator: lazy loading, batched generation, streaming and token accounting.

Why it is more than a thin wrapper around ``model.generate``:

- **Batching.** Prompts are tokenized one by one, sorted by length and cut into batches, so each
  batch carries little padding; every batch is left-padded (decoder-only models continue from
  the last position, so real tokens must end there) and runs with the KV cache. Results come
  back in the caller's order.
- **Finished rows are found by position, not by pad id.** Many chat models (SmolLM2 included)
  use the same token for padding and EOS; instead of masking "pad" tokens the generated ids are
  cut at the first terminator, which is correct in both cases and yields exact token counts.
- **Decoding options are authoritative.** Every field of the transformers generation config is
  set from :class:`GenerationOptions`, so a model's own ``generation_config.json`` (which may
  switch on sampling) never changes what the caller asked for.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ragkit.errors import RagkitError
from ragkit.generation.answerability import AnswerabilityProbe
from ragkit.generation.chat import Prompt, RenderedPrompt, render_prompt
from ragkit.generation.checkpoints import resolve_causal_lm
from ragkit.generation.constraints import (
    ObservesAnswerability,
    TokenConstraint,
    check_constraints,
    constraint_factory,
)
from ragkit.generation.options import GenerationOptions
from ragkit.generation.results import GenerationResult, result_from_tokens
from ragkit.generation.stopping import make_cancel_criteria, make_stop_criteria
from ragkit.generation.streaming import QueueStreamer, TextStream

if TYPE_CHECKING:
    import torch
    from transformers import LogitsProcessor

CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 64

LogitsProcessorFactory = Callable[[int], "LogitsProcessor"]
"""Builds a fresh transformers ``LogitsProcessor`` for one batch, given the batch's prompt width.

The width (left padding + the longest prompt, in tokens) is where generated tokens begin in
every row a processor sees. A factory rather than a processor because the generator cuts the
prompts into batches of different widths, and a stateful processor (one that parses what was
generated so far) must neither guess that boundary nor share its state between batches or
concurrent calls."""


class ContextLengthError(RagkitError):
    """A prompt plus the requested new tokens does not fit in the model's context window."""


def prepare_prompts(
    prompts: Sequence[Prompt],
    opts: GenerationOptions,
    tokenizer: Any,
    encode: Callable[[RenderedPrompt], list[int]],
    limit: int,
    where: str = "the model's context",
) -> tuple[list[RenderedPrompt], list[list[int]]]:
    """Render and tokenize every prompt, refusing before any generation one that cannot fit.

    Shared by every backend that tokenizes locally (transformers, llama.cpp, vLLM), so a prompt
    too long for ``max_new_tokens`` fails with the same message whichever runs it.
    """
    rendered = [render_prompt(tokenizer, p, opts.apply_chat_template) for p in prompts]
    encoded = [encode(r) for r in rendered]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenization")
        if len(ids) + opts.max_new_tokens > limit:
            raise ContextLengthError(
                f"prompt {i} has {len(ids)} tokens; with max_new_tokens={opts.max_new_tokens} "
                f"it exceeds {where} of {limit} tokens"
            )
    return rendered, encoded


class GeneratorConfig(BaseModel):
    """A generator's init parameters: what a saved pipeline records to rebuild it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        None, description="None/'default' (packaged SmolLM2), a hub id, a folder or a .gguf file."
    )
    device: str | None = Field(None, description="None/'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    dtype: str | None = Field(None, description="None/'auto', 'float32', 'bfloat16', 'float16'.")
    batch_size: int | None = Field(
        None, ge=1, description=f"None: {CPU_BATCH_SIZE} on CPU, {GPU_BATCH_SIZE} on GPU."
    )
    options: GenerationOptions = Field(
        default_factory=GenerationOptions, description="Default decoding options of every call."
    )
    adapter: str | None = Field(
        None,
        description="A LoRA adapter merged into the model at load time: a packaged name "
        "('grounded-qa' = the one trained for this model, 'grounded-qa-gemma' = "
        "'grounded-qa-sft', 'grounded-qa-rlhf', 'grounded-qa-smollm2') or a peft adapter folder.",
    )
    quantize: str | None = Field(
        None,
        description="None/'none', 'int8' (int8 linear layers, CPU only) or 'auto' (int8 on a "
        "CPU where it passes the quality guard of ragkit.generation.quantization).",
    )


class Generator:
    """Text generation with a causal language model.

    Nothing is loaded at construction: the tokenizer (and config) load on the first call that
    needs them (:meth:`count_tokens`, :attr:`context_length`), the weights on the first
    generation or an explicit :meth:`warm_up`.

    >>> gen = Generator()  # the packaged SmolLM2-135M-Instruct
    >>> gen.generate(["What is the capital of France?"], max_new_tokens=16)[0].text
    'The capital of France is Paris.'
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | None = None,
        dtype: str | None = None,
        *,
        batch_size: int | None = None,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        quantize: str | None = None,
    ) -> None:
        if quantize is not None:
            from ragkit.generation.quantization import quantization_mode

            quantize = quantization_mode(quantize)  # a wrong name fails now, not at load
        if adapter is not None:
            from ragkit.generation.adapters import packaged_adapter_name, resolve_adapter

            model_name = os.fspath(model) if model is not None else None
            adapter = packaged_adapter_name(os.fspath(adapter), model_name)
            resolve_adapter(adapter)  # a wrong name fails now, not at the first question
        self.config = GeneratorConfig(
            model=os.fspath(model) if model is not None else None,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            options=GenerationOptions.coerce(options, {}),
            adapter=os.fspath(adapter) if adapter is not None else None,
            quantize=quantize,
        )
        self.quantization: str = "none"
        """What the loaded model runs as: "none" or "int8" (``auto`` resolved)."""
        self.quantization_verdict: Any = None
        """The quality guard's verdict when ``quantize="auto"`` decided (None otherwise)."""
        self.backend_verdict: Any = None
        """Why ``--generator-backend auto`` chose this backend (None when it was asked for)."""
        self.answerability_probe: AnswerabilityProbe | None = None
        """The adapter's answerability probe, read at load (None: the adapter has none)."""
        self._lock = threading.RLock()
        self._source: Path | str | None = None
        self._tokenizer: Any = None
        self._model_config: Any = None
        self._model: Any = None
        self._device: str | None = None
        self._dtype: torch.dtype | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._pad_id = 0

    @classmethod
    def from_config(cls, config: GeneratorConfig | Mapping[str, Any]) -> Generator:
        """Build from a :class:`GeneratorConfig` or its dict form (e.g. read from YAML)."""
        cfg = (
            config
            if isinstance(config, GeneratorConfig)
            else GeneratorConfig.model_validate(config)
        )
        return cls(
            cfg.model,
            cfg.device,
            cfg.dtype,
            batch_size=cfg.batch_size,
            options=cfg.options,
            adapter=cfg.adapter,
            quantize=cfg.quantize,
        )

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "not loaded"
        adapter = f", adapter={self.config.adapter!r}" if self.config.adapter else ""
        if self.config.quantize not in (None, "none"):
            adapter += f", quantize={self.config.quantize!r}"
        return f"Generator(model={self.config.model!r}{adapter}, device={self._device or self.config.device!r}, {state})"

    # ------------------------------------------------------------------ loading

    @property
    def source(self) -> Path | str:
        """What the model loads from (the converted cache folder for the default)."""
        with self._lock:
            if self._source is None:
                self._source = resolve_causal_lm(self.config.model)
            return self._source

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (loaded on first access, without the weights)."""
        with self._lock:
            if self._tokenizer is None:
                from ragkit.generation.loading import load_tokenizer

                self._tokenizer = load_tokenizer(self.source)
            return self._tokenizer

    @property
    def model(self) -> Any:
        """The transformers model (loaded on first access)."""
        self.warm_up()
        return self._model

    @property
    def device(self) -> str:
        """The device the model runs on (resolved without loading the weights)."""
        with self._lock:
            if self._device is None:
                from ragkit.generation.device import select_device

                self._device = select_device(self.config.device)
            return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The parameter dtype (resolved without loading the weights)."""
        with self._lock:
            if self._dtype is None:
                from ragkit.generation.device import select_dtype

                self._dtype = select_dtype(self.device, self.config.dtype)
            return self._dtype

    @property
    def batch_size(self) -> int:
        """Default prompts per batch: the configured value or a device-dependent default."""
        if self.config.batch_size is not None:
            return self.config.batch_size
        return CPU_BATCH_SIZE if self.device == "cpu" else GPU_BATCH_SIZE

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Ids that end generation (the model's generation config and the tokenizer's EOS)."""
        self.warm_up()
        return self._eos_ids

    @property
    def pad_token_id(self) -> int:
        """Id used for left padding (may equal an EOS id; padding is masked, never counted)."""
        self.warm_up()
        return self._pad_id

    def token_table(self) -> Any:
        """The vocabulary as bytes per token, for grounded span decoding (built once)."""
        from ragkit.generation.grounded import token_table

        return token_table(self.tokenizer)

    @property
    def is_loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._model is not None

    def warm_up(self) -> Generator:
        """Load tokenizer and weights now (e.g. before serving) instead of on the first call."""
        with self._lock:
            if self._model is None:
                from ragkit.generation.loading import load_model

                tokenizer = self.tokenizer
                model = load_model(self.source, self.device, self.dtype)
                if self.config.adapter is not None:
                    from ragkit.generation.adapters import apply_adapter, resolve_adapter

                    model = apply_adapter(model, self.config.adapter)
                    self.answerability_probe = _fitting_probe(
                        AnswerabilityProbe.load(resolve_adapter(self.config.adapter)), model
                    )
                self._eos_ids = _eos_ids(model, tokenizer)
                self._pad_id = _pad_id(tokenizer, self._eos_ids)
                self._model = self._quantized(model, tokenizer)
        return self

    def _quantized(self, model: Any, tokenizer: Any) -> Any:
        """The loaded model as ``quantize`` asks (after the adapter is merged into it)."""
        from ragkit.generation.quantization import apply_quantization, check_quantization

        mode = check_quantization(self.config.quantize, self.device)
        if mode == "auto" and not self.device.startswith("cpu"):
            return model  # the guard is a CPU choice; GPUs run bf16/fp16 instead
        model, verdict = apply_quantization(
            model, mode, tokenizer, set(self._eos_ids), str(self.source), self.config.adapter
        )
        self.quantization_verdict = verdict
        self.quantization = (
            "int8" if mode == "int8" or (verdict and verdict.chosen == "int8") else "none"
        )
        return model

    # ------------------------------------------------------------------ tokens

    @property
    def context_length(self) -> int:
        """Tokens the model can attend to (prompt plus completion)."""
        from ragkit.generation.loading import context_length_of, load_config

        with self._lock:
            if self._model_config is None:
                self._model_config = (
                    self._model.config if self._model is not None else load_config(self.source)
                )
            return context_length_of(self._model_config, self.tokenizer)

    def max_prompt_tokens(
        self, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> int:
        """The longest prompt (in tokens, after templating) that leaves room for the answer."""
        opts = self._options(options, {})
        return max(0, self.context_length - opts.max_new_tokens)

    def render(self, prompt: Prompt, apply_chat_template: bool | None = None) -> str:
        """The exact text the model reads for ``prompt`` (chat template applied or not)."""
        return render_prompt(self.tokenizer, prompt, apply_chat_template).text

    def count_tokens(self, prompt: Prompt, apply_chat_template: bool | None = None) -> int:
        """Tokens of ``prompt`` as :meth:`generate` would send it.

        Pass ``apply_chat_template=False`` to count a bare piece of text (e.g. one passage).
        """
        return len(self._encode(render_prompt(self.tokenizer, prompt, apply_chat_template)))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` covered by its first ``max_tokens`` tokens.

        The cut uses the tokenizer's character offsets, so the result is an exact prefix of
        ``text`` (decoding the ids back could normalise spaces or characters).
        """
        if max_tokens <= 0:
            return ""
        tokenizer = self.tokenizer
        try:
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError):  # slow tokenizers: no offsets
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return text if len(ids) <= max_tokens else self._decode(ids[:max_tokens])
        offsets = encoded["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        return text[: offsets[max_tokens - 1][1]]

    def _encode(self, rendered: RenderedPrompt) -> list[int]:
        ids = self.tokenizer(rendered.text, add_special_tokens=rendered.add_special_tokens)
        return list(ids["input_ids"])

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    # ------------------------------------------------------------------ generation

    def _options(
        self, options: GenerationOptions | Mapping[str, Any] | None, overrides: Mapping[str, Any]
    ) -> GenerationOptions:
        """Generator defaults, then the fields set in ``options``, then keyword overrides."""
        base = self.config.options
        if isinstance(options, GenerationOptions):
            base = base.merged(options.model_dump(exclude_unset=True))
        elif isinstance(options, Mapping):
            base = base.merged(dict(options))
        elif options is not None:
            raise TypeError(
                f"options must be GenerationOptions, a mapping or None, not {type(options).__name__}"
            )
        return base.merged(overrides)

    def _prepare(
        self, prompts: Sequence[Prompt], opts: GenerationOptions
    ) -> tuple[list[RenderedPrompt], list[list[int]]]:
        return prepare_prompts(prompts, opts, self.tokenizer, self._encode, self.context_length)

    def generate(
        self,
        prompts: Sequence[Prompt],
        options: GenerationOptions | Mapping[str, Any] | None = None,
        *,
        logits_processors: Sequence[LogitsProcessorFactory] | None = None,
        constraints: Sequence[TokenConstraint | None] | None = None,
        **overrides: Any,
    ) -> list[GenerationResult]:
        """Complete every prompt; results are in the order of ``prompts``.

        Each prompt is a string or a list of chat messages. Options come from the generator's
        defaults, then ``options``, then keyword ``overrides`` (``generate(ps, max_new_tokens=32)``
        is the call style the ``prompts`` package uses). Greedy results do not depend on the
        batch size or on which prompts share a batch.

        ``logits_processors`` (factories, see :data:`LogitsProcessorFactory`) reshape the
        next-token scores, e.g. ``prompts.constrained.JsonSchemaConstraint`` for schema-guided
        decoding; each batch gets fresh processors. They are not decoding options: they hold
        code, so they are neither validated nor recorded in :class:`GenerationOptions`.

        ``constraints`` (one per prompt, ``None`` for a free row) restrict each prompt's tokens,
        e.g. grounded span decoding (:mod:`ragkit.generation.grounded`); they follow their prompt
        into whichever batch and row it lands in.
        """
        if isinstance(prompts, str):
            raise TypeError("generate() takes a list of prompts: wrap a single prompt in a list")
        opts = self._options(options, overrides)
        prompts = list(prompts)
        if not prompts:
            return []
        check_constraints(constraints, len(prompts))
        self.warm_up()
        rendered, encoded = self._prepare(prompts, opts)
        size = opts.batch_size or self.batch_size
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
        results: list[GenerationResult | None] = [None] * len(prompts)
        with _seeded(opts.seed, self.device):
            for start in range(0, len(order), size):
                chosen = order[start : start + size]
                rows = self._generate_batch(
                    [encoded[i] for i in chosen],
                    opts,
                    logits_processors=logits_processors,
                    constraints=[constraints[i] for i in chosen] if constraints else None,
                )
                for i, new_ids in zip(chosen, rows, strict=True):
                    results[i] = self._result(rendered[i], encoded[i], new_ids, opts)
        return [r for r in results if r is not None]

    def stream(
        self,
        prompt: Prompt,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        *,
        constraint: TokenConstraint | None = None,
        **overrides: Any,
    ) -> TextStream:
        """Yield text pieces of one completion as they are generated.

        The pieces concatenate to the text :meth:`generate` returns for the same prompt and
        options; after the loop, ``stream.result`` holds that :class:`GenerationResult`.
        Beam search cannot stream (no token is final before the search ends).
        """
        opts = self._options(options, overrides)
        if opts.num_beams > 1:
            raise ValueError("streaming supports greedy decoding and sampling, not beam search")
        self.warm_up()
        (rendered,), (prompt_ids,) = self._prepare([prompt], opts)

        def run(streamer: QueueStreamer, is_cancelled: Callable[[], bool]) -> None:
            with _seeded(opts.seed, self.device):
                self._generate_batch(
                    [prompt_ids],
                    opts,
                    streamer=streamer,
                    is_cancelled=is_cancelled,
                    constraints=[constraint] if constraint is not None else None,
                )

        return TextStream(
            run=run,
            decode=self._decode,
            finish=lambda new_ids: self._result(rendered, prompt_ids, new_ids, opts),
            stops=opts.stop,
            terminators=self._terminators(),
        )

    def _terminators(self) -> frozenset[int]:
        """Ids that end a row: EOS, and the pad id (only ever after a row stopped)."""
        return self._eos_ids | {self._pad_id}

    def _generate_batch(
        self,
        batch: list[list[int]],
        opts: GenerationOptions,
        *,
        streamer: QueueStreamer | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        logits_processors: Sequence[LogitsProcessorFactory] | None = None,
        constraints: Sequence[TokenConstraint | None] | None = None,
    ) -> list[list[int]]:
        """Left-pad ``batch``, generate, and return each row's new ids (padding included)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor(
            [[self._pad_id] * (width - len(ids)) + ids for ids in batch], dtype=torch.long
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], dtype=torch.long
        )
        criteria = StoppingCriteriaList()
        if opts.stop:
            criteria.append(make_stop_criteria(self._decode, opts.stop, width))
        if is_cancelled is not None:
            criteria.append(make_cancel_criteria(is_cancelled))
        factories = list(logits_processors or ())
        if constraints and any(c is not None for c in constraints):
            factories.append(constraint_factory(constraints))
        processors = LogitsProcessorList(factory(width) for factory in factories)
        hook = self._answerability_hook(constraints)
        try:
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    generation_config=self._generation_config(opts),
                    stopping_criteria=criteria,
                    logits_processor=processors or None,
                    streamer=streamer,
                )
        finally:
            if hook is not None:
                hook.remove()
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        return [list(row) for row in sequences[:, width:].tolist()]

    def _answerability_hook(self, constraints: Sequence[TokenConstraint | None] | None) -> Any:
        """Hand each row's probe estimate to its constraint, from the prompt's own forward pass.

        A forward hook on the module the probe reads fires first on the prompt (before any
        token is chosen); its last position is the prompt's last token in every row, because
        rows are left-padded. Later calls (one new token each) are ignored, and so are forward
        passes of other threads (the server generates for several requests at once on one
        model, and a hook sees every call): ``generate`` runs its forward passes in the thread
        that called it.
        """
        probe = self.answerability_probe
        watchers = [c if isinstance(c, ObservesAnswerability) else None for c in constraints or ()]
        if probe is None or not any(w is not None for w in watchers):
            return None
        from ragkit.generation.answerability import hidden_state_module

        seen = False
        owner = threading.get_ident()

        def read(_module: Any, _inputs: Any, output: Any) -> None:
            nonlocal seen
            if seen or threading.get_ident() != owner:
                return
            seen = True
            hidden = output[0] if isinstance(output, tuple) else output
            last = hidden[:, -1, :].float().tolist()
            per_prompt = max(1, len(last) // len(watchers))
            for index, watcher in enumerate(watchers):
                if watcher is not None:
                    watcher.observe_answerability(probe.probability(last[index * per_prompt]))

        return hidden_state_module(self.model, probe.layer).register_forward_hook(read)

    def _generation_config(self, opts: GenerationOptions) -> Any:
        """A transformers GenerationConfig with every decoding field set from ``opts``."""
        from transformers import GenerationConfig

        fields: dict[str, Any] = {
            "max_new_tokens": opts.max_new_tokens,
            "min_new_tokens": opts.min_new_tokens or None,
            "do_sample": opts.do_sample,
            "num_beams": opts.num_beams,
            "num_return_sequences": 1,
            "repetition_penalty": opts.repetition_penalty,
            "no_repeat_ngram_size": opts.no_repeat_ngram_size,
            "pad_token_id": self._pad_id,
            "eos_token_id": sorted(self._eos_ids) or None,
            "use_cache": True,
            # neutral values unless sampling: the model's own defaults must not leak in
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 1.0,
            "length_penalty": 1.0,
            "early_stopping": False,
        }
        if opts.do_sample:
            fields["temperature"] = opts.temperature if opts.temperature is not None else 1.0
            fields["top_k"] = opts.top_k if opts.top_k is not None else 0
            fields["top_p"] = opts.top_p if opts.top_p is not None else 1.0
        if opts.num_beams > 1:
            if opts.length_penalty is not None:
                fields["length_penalty"] = opts.length_penalty
            if opts.early_stopping is not None:
                fields["early_stopping"] = opts.early_stopping
        return GenerationConfig(**fields)

    def _result(
        self,
        rendered: RenderedPrompt,
        prompt_ids: list[int],
        new_ids: list[int],
        opts: GenerationOptions,
    ) -> GenerationResult:
        return result_from_tokens(
            new_ids,
            prompt_text=rendered.text,
            prompt_tokens=len(prompt_ids),
            stops=opts.stop,
            decode=self._decode,
            terminators=self._terminators(),
            eos_ids=self._eos_ids,
        )


def _fitting_probe(probe: AnswerabilityProbe | None, model: Any) -> AnswerabilityProbe | None:
    """``probe`` after checking it reads this model (its width and layer), else a ProbeError."""
    if probe is None:
        return None
    from ragkit.generation.answerability import ProbeError, hidden_state_module

    config = getattr(model, "config", None)
    width = getattr(getattr(config, "text_config", config), "hidden_size", probe.hidden_size)
    if width != probe.hidden_size:
        raise ProbeError(
            f"the adapter's answerability probe reads {probe.hidden_size} hidden units; "
            f"this model has {width}"
        )
    hidden_state_module(model, probe.layer)  # a layer the model has
    return probe


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends generation: the model's generation config and the tokenizer's EOS."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list | tuple):
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _pad_id(tokenizer: Any, eos_ids: frozenset[int]) -> int:
    """The id used for left padding: the tokenizer's pad, else an EOS id (masked out anyway)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(eos_ids) if eos_ids else 0


@contextlib.contextmanager
def _seeded(seed: int | None, device: str) -> Iterator[None]:
    """Seed torch's RNG for one call and restore the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    import torch

    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
