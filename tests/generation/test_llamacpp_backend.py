"""The llama.cpp backend's own logic, on a fake compiled model (runs without llama-cpp-python).

The fake is a bigram model over a tiny vocabulary: the next token's logits depend only on the
last token, so every expected answer below is worked out by hand from the table.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit.generation import GenerationOptions
from ragkit.generation.backends import (
    BackendUnavailableError,
    GeneratorBackendError,
    LlamaCppGenerator,
    UnsupportedOptionError,
    Vocabulary,
    generator_from_config,
    make_generator,
)
from ragkit.generation.backends.base import can_constrain_tokens
from ragkit.generation.backends.llamacpp_model import import_llama_cpp
from ragkit.generation.generator import ContextLengthError
from ragkit.generation.grounded import SpanAutomaton, locate_span

PIECES: list[bytes | None] = [
    None,  # 0 <eos>
    None,  # 1 <bos>
    b"Q:",  # 2
    b" Paris",  # 3
    b" is",  # 4
    b" the",  # 5
    b" capital",  # 6
    b".",  # 7
    b"\n",  # 8
    b" 1992",  # 9
    b" Strasbourg",  # 10
    b" since",  # 11
    b"A:",  # 12
    b" seat",  # 13
]
BYTE_BASE = 1000
PIECES += [None] * (BYTE_BASE - len(PIECES)) + [bytes([b]) for b in range(256)]
"""Byte-fallback tokens, as SentencePiece vocabularies have, for anything else."""
EOS, BOS = 0, 1
# bigram: last token -> the token the fake model prefers next
PREFERRED = {12: 3, 3: 4, 4: 5, 5: 6, 6: 7, 7: 8, 8: EOS, 2: 10, 10: 11, 11: 9, 9: 7, 13: 11}


class BigramModel:
    """A :class:`LlamaCppModel` whose logits favour ``PREFERRED[last token]``."""

    def __init__(self, context: int = 64) -> None:
        self.calls: list[list[int]] = []
        self._context = context

    @property
    def context_length(self) -> int:
        return self._context

    @property
    def metadata(self) -> dict[str, str]:
        return {}

    def vocabulary(self) -> Vocabulary:
        return Vocabulary(pieces=tuple(PIECES), eos_ids=frozenset({EOS}), bos_id=BOS, add_bos=True)

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        data, ids = text.encode("utf-8"), [BOS] if add_bos else []
        pos = 0
        while pos < len(data):
            best = max(
                (i for i, p in enumerate(PIECES) if p and data.startswith(p, pos)),
                key=lambda i: len(PIECES[i] or b""),
                default=None,
            )
            if best is None:  # a byte the vocabulary lacks: one (unprintable) token per byte
                ids.append(BYTE_BASE + data[pos])
                pos += 1
                continue
            ids.append(best)
            pos += len(PIECES[best] or b"")
        return ids

    @property
    def layer_count(self) -> int:
        return 2

    def final_state(self, ids: Sequence[int]) -> np.ndarray:
        """A two-unit "hidden state": the prompt's length and its last token."""
        self.calls.append(list(ids))
        return np.array([len(ids), ids[-1]], dtype=np.float32)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self.calls.append(list(ids))
        scores = np.zeros(len(PIECES), dtype=np.float32)
        scores[: len(PREFERRED) + 2] = np.linspace(0.0, 1.0, len(PREFERRED) + 2)  # weak, fixed
        scores[PREFERRED.get(ids[-1], EOS)] = 10.0
        return scores


def _generator(**kwargs: Any) -> tuple[LlamaCppGenerator, BigramModel]:
    fake = BigramModel(kwargs.pop("context", 64))
    seen: dict[str, Any] = {}

    def loader(path: Path, n_ctx: int, n_threads: int | None) -> BigramModel:
        seen.update(path=path, n_ctx=n_ctx, n_threads=n_threads)
        return fake

    gen = LlamaCppGenerator("model.gguf", loader=loader, **kwargs)
    gen.gguf_path = lambda: Path("model.gguf")  # type: ignore[method-assign]
    return gen, fake


PLAIN = {"apply_chat_template": False}


def test_greedy_follows_the_model_and_counts_the_eos() -> None:
    gen, _ = _generator()
    (result,) = gen.generate(["A:"], PLAIN, max_new_tokens=10)
    assert result.text == " Paris is the capital.\n"
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 7  # six pieces and the EOS
    assert result.prompt_tokens == 2  # BOS + "A:"


def test_length_limit_and_stop_strings_cut_like_the_transformers_path() -> None:
    gen, _ = _generator()
    (short,) = gen.generate(["A:"], PLAIN, max_new_tokens=2)
    assert (short.text, short.finish_reason, short.completion_tokens) == (" Paris is", "length", 2)
    (cut,) = gen.generate(["A:"], PLAIN, max_new_tokens=10, stop=[" the"])
    assert (cut.text, cut.finish_reason, cut.stop_string) == (" Paris is", "stop_string", " the")


def test_stream_pieces_concatenate_to_the_generated_text() -> None:
    gen, _ = _generator()
    opts = {**PLAIN, "max_new_tokens": 10, "stop": ["\n"]}
    (batch,) = gen.generate(["A:"], opts)
    stream = gen.stream("A:", opts)
    pieces = list(stream)
    assert "".join(pieces) == batch.text == " Paris is the capital."
    assert len(pieces) > 1  # streamed, not one final piece
    assert stream.result == batch


def test_a_batch_reuses_nothing_between_prompts_but_keeps_their_order() -> None:
    gen, fake = _generator()
    results = gen.generate(["Q:", "A:"], PLAIN, max_new_tokens=3)
    assert [r.text for r in results] == [" Strasbourg since 1992", " Paris is the"]
    assert fake.calls[0] == [BOS, 2]  # the first prompt is scored first


def test_grounded_constraint_forces_a_span_of_the_passage() -> None:
    gen, _ = _generator()
    passage = "the seat since 1992."
    automaton = SpanAutomaton([passage], gen.token_table(), gen.eos_token_ids, max_tokens=8)
    # unconstrained the model says " Paris is the capital."; the passage has no "Paris"
    (result,) = gen.generate(["A:"], PLAIN, max_new_tokens=8, constraints=[automaton])
    assert locate_span(result.text, [passage]) is not None
    assert "Paris" not in result.text
    stream = gen.stream("A:", {**PLAIN, "max_new_tokens": 8}, constraint=automaton)
    assert "".join(stream) == result.text


def _adapter_with_probe(folder: Path, layer: int) -> Path:
    import json

    from ragkit.generation.answerability import AnswerabilityProbe

    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    # P(answerable) = sigmoid(last prompt token - 7): "Q:" (2) is answerless, " seat" (13) is not
    AnswerabilityProbe(
        layer=layer, mean=(0.0, 7.0), scale=(1.0, 1.0), weight=(0.0, 1.0), bias=0.0
    ).save(folder)
    return folder


def test_a_final_layer_probe_vetoes_answers_on_llama_cpp_as_on_transformers(
    tmp_path: Path,
) -> None:
    gen, _ = _generator(adapter=_adapter_with_probe(tmp_path, layer=2))
    gen.warm_up()
    assert gen.answerability_probe is not None
    passage = "the seat since 1992."
    table, eos = gen.token_table(), gen.eos_token_ids
    for prompt, vetoed in (("Q:", True), (" seat", False)):  # byte tokens: 20 for the phrase
        automaton = SpanAutomaton([passage], table, eos, max_tokens=32, abstain_below=0.5)
        (result,) = gen.generate([prompt], PLAIN, max_new_tokens=32, constraints=[automaton])
        assert automaton.answerability is not None
        assert (automaton.answerability < 0.5) == vetoed
        assert (result.text.strip() == "not in the passages") == vetoed
        streamed = SpanAutomaton([passage], table, eos, max_tokens=32, abstain_below=0.5)
        pieces = gen.stream(prompt, {**PLAIN, "max_new_tokens": 32}, constraint=streamed)
        assert "".join(pieces) == result.text


def test_a_probe_of_another_layer_is_refused_on_llama_cpp_in_one_line(tmp_path: Path) -> None:
    from ragkit.generation.answerability import ProbeError

    gen, _ = _generator(adapter=_adapter_with_probe(tmp_path, layer=1))
    with pytest.raises(
        ProbeError,
        match=r"reads hidden state 1; the llama\.cpp backend gives "
        r"only the final one \(2\): use --generator-backend transformers$",
    ):
        gen.warm_up()


def test_sampling_is_reproducible_per_seed_and_distinct_per_prompt() -> None:
    gen, _ = _generator()
    opts = {**PLAIN, "max_new_tokens": 6, "do_sample": True, "temperature": 50.0, "seed": 3}
    first = [r.text for r in gen.generate(["A:"] * 4, opts)]
    again = [r.text for r in gen.generate(["A:"] * 4, opts)]
    assert first == again
    assert len(set(first)) > 1  # seed + i per prompt: four samples, not one repeated


def test_beam_search_and_oversized_prompts_are_refused_before_decoding() -> None:
    gen, fake = _generator(context=8)
    with pytest.raises(UnsupportedOptionError, match="beam search"):
        gen.generate(["A:"], {**PLAIN, "num_beams": 2})
    with pytest.raises(ContextLengthError, match=r"llamacpp context \(n_ctx\) of 8"):
        gen.generate(["A:"], PLAIN, max_new_tokens=7)
    assert fake.calls == []


def test_token_accounting_and_truncation_are_exact_prefixes() -> None:
    gen, _ = _generator()
    assert gen.count_tokens("A: Paris is", apply_chat_template=False) == 4
    assert gen.truncate(" Paris is the capital.", 2) == " Paris is"
    assert gen.truncate(" Paris", 5) == " Paris"
    assert gen.truncate(" Paris", 0) == ""
    assert gen.max_prompt_tokens({"max_new_tokens": 10}) == 54


def test_chat_prompts_fall_back_to_a_transcript_without_a_template() -> None:
    gen, _ = _generator()
    assert gen.render([{"role": "user", "content": "hi"}]) == "User: hi\n\nAssistant:"


@pytest.fixture
def llama_cpp_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """Construction checks the package is installed (without importing it): pretend it is."""
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))


@pytest.mark.usefixtures("llama_cpp_present")
def test_the_backend_is_built_and_rebuilt_by_name() -> None:
    gen = make_generator("llamacpp", "model.gguf", n_threads=2)
    assert isinstance(gen, LlamaCppGenerator) and not gen.is_loaded
    assert can_constrain_tokens(gen)
    rebuilt = generator_from_config(gen.config.model_dump(mode="json"))
    assert isinstance(rebuilt, LlamaCppGenerator)
    assert rebuilt.config == gen.config
    with pytest.raises(GeneratorBackendError, match="quantize"):
        make_generator("llamacpp", None, quantize="int8")


@pytest.mark.usefixtures("llama_cpp_present")
def test_a_hub_id_is_refused_with_the_fallback_named(tmp_path: Path) -> None:
    with pytest.raises(GeneratorBackendError, match=r"reads GGUF files.*transformers"):
        LlamaCppGenerator("org/some-model").gguf_path()
    with pytest.raises(GeneratorBackendError, match=r"GGUF file not found: .*missing\.gguf"):
        LlamaCppGenerator(str(tmp_path / "missing.gguf")).gguf_path()
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(GeneratorBackendError, match=r"neither a packaged model nor a \.gguf"):
        LlamaCppGenerator(str(folder)).gguf_path()


def test_a_missing_llama_cpp_names_the_install_and_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.import_module

    def no_llama(name: str, *args: Any) -> Any:
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_llama)
    with pytest.raises(BackendUnavailableError) as caught:
        import_llama_cpp()
    message = str(caught.value)
    assert "\n" not in message
    assert "ragkit[llamacpp]" in message and "--generator-backend transformers" in message
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # absent: refused at construction
    with pytest.raises(BackendUnavailableError, match=r"ragkit\[llamacpp\]"):
        make_generator("llamacpp")


def test_options_defaults_apply_and_calls_override_them() -> None:
    gen, _ = _generator(options=GenerationOptions(max_new_tokens=1, apply_chat_template=False))
    assert gen.generate(["A:"])[0].text == " Paris"
    assert gen.generate(["A:"], max_new_tokens=2)[0].text == " Paris is"
