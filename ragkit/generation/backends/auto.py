"""``--generator-backend auto``: llama.cpp where it is installed and passes a quality guard here,
else transformers.

Why a guard rather than "llama.cpp whenever installed": the fast path runs a different kernel
(and, with an adapter, weights merged at f16), so its answers are only as good as the reference's
if this machine's build says so. The guard answers the built-in RAG-length probes of
:mod:`ragkit.generation.quantization` greedily with both backends — the same model, adapter and
options — and picks llama.cpp only when it writes the reference's answer on at least
:data:`MIN_AGREEMENT` of them and is at least :data:`MIN_SPEEDUP` times faster. The verdict is
cached per model file, adapter, CPU features and library versions (:mod:`ragkit.choice_cache`),
so the measurement — both models loaded, about half a minute on two cores — happens once per
machine; every later start reads the verdict and loads only the chosen backend.

Where llama.cpp cannot be chosen (package absent, a hub id rather than a GGUF) ``auto`` is
transformers without measuring. Asking for ``llamacpp`` explicitly never consults the guard.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ragkit.choice_cache import choice_key, cpu_flags, load_choice, package_version, save_choice
from ragkit.generation.backends.base import GeneratorBackend, package_installed
from ragkit.generation.options import GenerationOptions
from ragkit.generation.quantization import MIN_AGREEMENT, MIN_SPEEDUP, PROBE_TOKENS, PROBES

GUARD_FORMAT = 1
CHOICE_KIND = "generator-backend"
log = logging.getLogger("ragkit.generation")


class BackendVerdict(BaseModel):
    """What the guard measured and chose."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = GUARD_FORMAT
    chosen: str
    agreement: float | None = None
    speedup: float | None = None
    probes: int = 0
    reason: str


def _gguf_of(model: str | None) -> Path | None:
    """The GGUF llama.cpp would read for ``model`` (None where it cannot run it)."""
    from ragkit.errors import RagkitError
    from ragkit.generation.backends.llamacpp_engine import resolve_gguf

    try:
        return resolve_gguf(model)
    except RagkitError:
        return None


def _key(gguf: Path, adapter: str | None) -> str:
    from ragkit.generation.checkpoints import file_identity

    return choice_key(
        {
            "gguf": file_identity(gguf),
            "adapter": adapter,
            "cpu": platform.processor() or platform.machine(),
            "cpu_flags": cpu_flags(),
            "cores": os.cpu_count(),
            "llama_cpp": package_version("llama-cpp-python"),
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
            "format": GUARD_FORMAT,
        }
    )


def _timed(generator: Any, prompts: list[str], opts: GenerationOptions) -> tuple[list[str], float]:
    generator.generate(prompts[:1], opts.merged({"max_new_tokens": 2}))  # warm-up
    started = time.perf_counter()
    texts = [r.text.strip() for r in generator.generate(prompts, opts)]
    return texts, time.perf_counter() - started


def measure(reference: Any, candidate: Any) -> BackendVerdict:
    """Answer the probes with both generators; llama.cpp (``candidate``) if it passes."""
    opts = GenerationOptions(max_new_tokens=PROBE_TOKENS, apply_chat_template=False)
    prompts = list(PROBES)
    expected, slow = _timed(reference, prompts, opts)
    answers, fast = _timed(candidate, prompts, opts)
    agreement = sum(a == e for a, e in zip(answers, expected, strict=True)) / len(prompts)
    speedup = slow / max(fast, 1e-9)
    passed = agreement >= MIN_AGREEMENT and speedup >= MIN_SPEEDUP
    return BackendVerdict(
        chosen="llamacpp" if passed else "transformers",
        agreement=round(agreement, 3),
        speedup=round(speedup, 3),
        probes=len(prompts),
        reason=(
            f"llama.cpp gave the transformers answer on {agreement:.0%} of {len(prompts)} probes "
            f"(needs {MIN_AGREEMENT:.0%}) and was {speedup:.2f}x as fast (needs {MIN_SPEEDUP}x)"
        ),
    )


def auto_generator(
    model: str | os.PathLike[str] | None = None,
    *,
    adapter: str | os.PathLike[str] | None = None,
    options: GenerationOptions | Mapping[str, Any] | None = None,
    quantize: str | None = None,
) -> GeneratorBackend:
    """The generator ``auto`` means for ``model`` + ``adapter`` on this machine.

    ``quantize`` (int8 / auto) is a transformers option: asking for it means transformers.

    The verdict is on the returned generator's ``backend_verdict`` attribute (for ``--verbose``
    and traces).
    """
    from ragkit.generation.backends.llamacpp_engine import LlamaCppGenerator
    from ragkit.generation.generator import Generator

    name = os.fspath(model) if model is not None else None
    adapter_name = None
    if adapter is not None:
        from ragkit.generation.adapters import packaged_adapter_name

        # one spelling per adapter ("grounded-qa" names the packaged model's own), so that
        # one adapter has one cached verdict
        adapter_name = packaged_adapter_name(os.fspath(adapter), name)

    def build(backend: str) -> Any:
        if backend == "llamacpp":
            return LlamaCppGenerator(name, adapter=adapter_name, options=options)
        return Generator(name, adapter=adapter_name, options=options, quantize=quantize)

    wants_quantization = quantize not in (None, "none")
    installed = package_installed("llama_cpp")
    gguf = _gguf_of(name) if installed and not wants_quantization else None
    if gguf is None:
        generator = build("transformers")
        if wants_quantization:
            why = f"quantize={quantize!r} is a transformers option"
        elif not installed:
            why = "llama-cpp-python is not installed"
        else:
            why = f"{name!r} is not a GGUF llama.cpp can read"
        generator.backend_verdict = BackendVerdict(chosen="transformers", reason=why)
        return generator
    key = _key(gguf, adapter_name)
    verdict = load_choice(CHOICE_KIND, key, BackendVerdict)
    if verdict is not None and verdict.format_version == GUARD_FORMAT:
        generator = build(verdict.chosen)
        generator.backend_verdict = verdict
        return generator
    # the one slow first start of a machine: say so (one line on stderr without logging set up)
    log.warning(
        "choosing the generator backend for %s on this machine: both backends answer %d probe "
        "prompts (once; the verdict is cached)",
        gguf.name,
        len(PROBES),
    )
    reference, candidate = build("transformers"), build("llamacpp")
    verdict = measure(reference, candidate)
    save_choice(CHOICE_KIND, key, verdict)
    log.warning("generator backend: %s (%s)", verdict.chosen, verdict.reason)
    generator = candidate if verdict.chosen == "llamacpp" else reference
    generator.backend_verdict = verdict
    return generator
