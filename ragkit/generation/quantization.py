"""Weight quantisation of the generator on CPU: int8 linear layers, chosen by a quality guard.

Why: decoding a small model on a CPU is bound by memory traffic, and ragkit de-quantises the
packaged GGUF to float32, so every token reads four times the bytes an int8 weight needs. Torch's
dynamically quantised linear layers (int8 weights, activations quantised per call, fbgemm/onednn
kernels) cut that traffic without a new runtime: the model stays a transformers model, so
batching, streaming, stop strings, token constraints (grounded decoding) and merged adapters all
keep working. benchmarks/latency_bench.py measures it against fp32 and llama.cpp.

Modes (``Generator(quantize=...)``, ``--quantize``):

- ``"none"``: the float model as loaded;
- ``"int8"``: every ``nn.Linear`` (including the output head) int8; CPU only;
- ``"auto"``: int8 on a CPU when it passes the quality guard on this machine, else none. The
  guard answers a few built-in probe prompts greedily with both models: int8 must give the same
  answer (tokens up to the first end-of-sequence, at most :data:`PROBE_TOKENS`) on at least
  :data:`MIN_AGREEMENT` of them and be at least :data:`MIN_SPEEDUP` times faster. The verdict is
  cached per model, adapter, CPU and library versions, like the embedding backend's choice.
"""

from __future__ import annotations

import copy
import platform
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from ragkit.choice_cache import choice_key, cpu_flags, load_choice, save_choice
from ragkit.errors import RagkitError

if TYPE_CHECKING:
    import torch

Quantization = Literal["none", "int8", "auto"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
PROBE_TOKENS = 8
MIN_AGREEMENT = 0.75
MIN_SPEEDUP = 1.2
GUARD_FORMAT = 1

_FACTS = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It is 330 metres tall "
    "and was the tallest man-made structure in the world for 41 years.",
    "Photosynthesis converts light energy into chemical energy stored in glucose. It takes place "
    "in the chloroplasts of plant cells and releases oxygen as a by-product.",
    "The Danube flows through ten countries, more than any other river in the world, and empties "
    "into the Black Sea after a course of about 2,850 kilometres.",
    "Marie Curie was the first woman to win a Nobel Prize, in physics in 1903, and later won a "
    "second one in chemistry in 1911 for the discovery of polonium and radium.",
    "The Louvre, the world's most-visited museum, opened in 1793 in a former royal palace on the "
    "right bank of the Seine; its collection holds about 380,000 objects.",
    "Mount Kilimanjaro in Tanzania is the highest mountain in Africa. Its summit, Uhuru Peak, "
    "rises 5,895 metres above sea level and was first reached in 1889.",
    "The printing press with movable metal type was developed by Johannes Gutenberg in Mainz "
    "around 1440; his Bible was printed in the 1450s.",
    "Honey bees communicate the direction and distance of food with a waggle dance, which the "
    "Austrian ethologist Karl von Frisch described in the 1940s.",
)
_QUESTIONS = (
    ("When was the Eiffel Tower completed?", 0),
    ("Where does photosynthesis take place?", 1),
    ("Into which sea does the Danube empty?", 2),
    ("In which field did Marie Curie win her second Nobel Prize?", 3),
    ("Who developed the printing press with movable metal type?", 6),
    ("How high is Uhuru Peak?", 5),
)


def _probe(question: str, first: int) -> str:
    """A RAG-sized prompt (~450 tokens): every fact, the one asked about first."""
    order = [first, *(i for i in range(len(_FACTS)) if i != first)]
    passages = "\n".join(
        f"[{n}] {_FACTS[i]} {_FACTS[(i + 3) % len(_FACTS)]}" for n, i in enumerate(order, 1)
    )
    return f"Passages:\n{passages}\n\nQuestion: {question}\nAnswer:"


PROBES = tuple(_probe(question, first) for question, first in _QUESTIONS)
"""Prompts of the length RAG answers have: a quantisation that only breaks on long prompts
(activation ranges grow with the number of tokens quantised together) must fail here."""


class QuantizationError(RagkitError):
    """A quantisation mode that does not exist or cannot run where the model is."""


class QuantizationVerdict(BaseModel):
    """What the guard measured, cached so the choice is made once per machine and model."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = GUARD_FORMAT
    chosen: str
    agreement: float
    speedup: float
    probes: int
    reason: str


def quantization_mode(mode: str | None) -> Quantization:
    """``mode`` spelled canonically (None means "none"); an unknown name is refused in one line."""
    name = (mode or "none").strip().lower()
    if name not in QUANTIZATIONS:
        raise QuantizationError(
            f"unknown quantization {mode!r} (use one of: {', '.join(QUANTIZATIONS)})"
        )
    return name  # type: ignore[return-value]


def check_quantization(mode: str | None, device: str) -> Quantization:
    """The mode as a :data:`Quantization`; int8 off the CPU is refused in one line."""
    name = quantization_mode(mode)
    if name == "int8" and not device.startswith("cpu"):
        raise QuantizationError(
            f"quantization 'int8' runs on the CPU only, not on {device!r} "
            "(use bfloat16 or float16 there: --dtype)"
        )
    return name


def quantize_int8(model: Any) -> Any:
    """Replace every ``nn.Linear`` of ``model`` by a dynamically quantised int8 one, in place."""
    import torch

    with warnings.catch_warnings():  # torch announces the API's move to torchao; it still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


def greedy_answer(model: Any, ids: Sequence[int], eos: set[int], tokens: int) -> list[int]:
    """Greedy tokens after ``ids`` up to and including the first EOS, at most ``tokens``."""
    import torch

    out_ids: list[int] = []
    with torch.inference_mode():
        out = model(torch.tensor([list(ids)]), use_cache=True, logits_to_keep=1)
        for _ in range(tokens):
            token = int(out.logits[0, -1].argmax())
            out_ids.append(token)
            if token in eos:
                break
            out = model(torch.tensor([[token]]), use_cache=True, **cache_of(out))
    return out_ids


def cache_of(output: Any) -> dict[str, Any]:
    """The key-value cache of a forward pass, as the next call takes it (transformers 5 renamed
    ``past_key_values`` to ``cache``)."""
    if "cache" in output:
        return {"cache": output["cache"]}
    return {"past_key_values": output.past_key_values}


def _timed_answers(
    model: Any, prompts: list[list[int]], eos: set[int]
) -> tuple[list[list[int]], float]:
    greedy_answer(model, prompts[0], eos, 2)  # warm-up: kernels, allocator
    started = time.perf_counter()
    answers = [greedy_answer(model, ids, eos, PROBE_TOKENS) for ids in prompts]
    return answers, time.perf_counter() - started


def _context_limit(model: Any) -> int:
    config: Any = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > PROBE_TOKENS else 2048


def measure_int8(model: Any, tokenizer: Any, eos: set[int]) -> QuantizationVerdict:
    """Answer the probes with ``model`` and an int8 copy; the verdict of the guard."""
    limit = _context_limit(model) - PROBE_TOKENS
    # a model with a short context sees the end of each probe (the question survives)
    prompts = [tokenizer(p)["input_ids"][-limit:] for p in PROBES]
    reference, fp_seconds = _timed_answers(model, prompts, eos)
    candidate = quantize_int8(copy.deepcopy(model))
    answers, q_seconds = _timed_answers(candidate, prompts, eos)
    del candidate
    agreement = sum(a == r for a, r in zip(answers, reference, strict=True)) / len(prompts)
    speedup = fp_seconds / max(q_seconds, 1e-9)
    passed = agreement >= MIN_AGREEMENT and speedup >= MIN_SPEEDUP
    reason = (
        f"int8 gave the fp32 answer on {agreement:.0%} of {len(prompts)} probes "
        f"(needs {MIN_AGREEMENT:.0%}) and was {speedup:.2f}x as fast (needs {MIN_SPEEDUP}x)"
    )
    return QuantizationVerdict(
        chosen="int8" if passed else "none",
        agreement=round(agreement, 3),
        speedup=round(speedup, 3),
        probes=len(prompts),
        reason=reason,
    )


def _verdict_key(source: str, adapter: str | None) -> str:
    import torch
    import transformers

    return choice_key(
        {
            "source": source,
            "adapter": adapter,
            "cpu": platform.processor() or platform.machine(),
            "cpu_flags": cpu_flags(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "format": GUARD_FORMAT,
        }
    )


def choose_quantization(
    model: Any, tokenizer: Any, eos: set[int], source: str, adapter: str | None
) -> QuantizationVerdict:
    """The cached verdict for this model on this machine, measured on first use."""
    key = _verdict_key(source, adapter)
    cached = load_choice("quantization", key, QuantizationVerdict)
    if cached is not None and cached.format_version == GUARD_FORMAT:
        return cached
    verdict = measure_int8(model, tokenizer, eos)
    save_choice("quantization", key, verdict)
    return verdict


def apply_quantization(
    model: Any, mode: Quantization, tokenizer: Any, eos: set[int], source: str, adapter: str | None
) -> tuple[Any, QuantizationVerdict | None]:
    """``model`` quantised as ``mode`` says (``auto``: as the guard decides), and the verdict."""
    if mode == "none":
        return model, None
    if mode == "int8":
        return quantize_int8(model), None
    verdict = choose_quantization(model, tokenizer, eos, source, adapter)
    if verdict.chosen == "int8":
        return quantize_int8(model), verdict
    return model, verdict


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds dynamically quantised linear layers."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
