"""The answerability probe on a tiny random model: what it reads, when it decides, how it is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.generation import Generator
from ragkit.generation.answerability import PROBE_FILE, AnswerabilityProbe, ProbeError
from ragkit.rag import RAGPipeline
from ragkit.rag.citations import ABSTENTION_ANSWER
from ragkit.retrieval import DenseRetriever

from .conftest import answered_three_ways

QUESTIONS = [
    "What is the capital of Alsace?",
    "Which river flows through Paris?",
    "When did the war on terror begin?",
    "What does culture include?",
    "Who painted the river?",
]
HIDDEN = 64  # tests/tiny_llama.py's default width


def random_probe(layer: int = 1, seed: int = 0) -> AnswerabilityProbe:
    import random

    rng = random.Random(seed)
    return AnswerabilityProbe(
        layer=layer,
        mean=tuple(rng.gauss(0, 0.1) for _ in range(HIDDEN)),
        scale=tuple(0.5 + rng.random() for _ in range(HIDDEN)),
        weight=tuple(rng.gauss(0, 1) for _ in range(HIDDEN)),
        bias=0.1,
    )


@pytest.fixture(scope="module")
def probed_generator(tiny_llama_path: Path) -> Generator:
    """Its own instance: the session's shared tiny generator stays probe-free."""
    generator = Generator(str(tiny_llama_path), device="cpu").warm_up()
    generator.answerability_probe = random_probe()
    return generator


def rag_with(
    index: Path, embedder: Embedder, generator: Generator, abstain_below: float | None
) -> RAGPipeline:
    return RAGPipeline(
        DenseRetriever(Index.open(index, embedder), k=2),
        generator,
        template="grounded_qa_completion",
        decoding="grounded",
        abstain_bias=-50.0,  # the random model itself never abstains: only the probe can
        abstain_below=abstain_below,
        options={"max_new_tokens": 8},
    )


def expected_probability(generator: Generator, prompt: str) -> float:
    """The probe applied to a plain forward pass's hidden state at the prompt's last token."""
    import torch

    probe = generator.answerability_probe
    assert probe is not None
    ids = generator.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        states = generator.model(input_ids=ids, output_hidden_states=True).hidden_states
    return probe.probability(states[probe.layer][0, -1].tolist())


@pytest.mark.parametrize("layer", [1, 2])  # a decoder layer's output; the final, normalised one
def test_the_reported_estimate_is_the_probe_on_the_prompts_last_hidden_state(
    tiny_index: Path, tiny_embedder: Embedder, tiny_llama_path: Path, layer: int
) -> None:
    probed_generator = Generator(str(tiny_llama_path), device="cpu").warm_up()
    probed_generator.answerability_probe = random_probe(layer=layer)
    rag = rag_with(tiny_index, tiny_embedder, probed_generator, abstain_below=0.0)
    answers = rag.ask_batch(QUESTIONS)  # batched: rows of different lengths, left-padded
    for answer in answers:
        assert answer.trace is not None and answer.trace.prompt is not None
        assert answer.answerability == pytest.approx(
            expected_probability(probed_generator, answer.trace.prompt), abs=1e-4
        )
        assert not answer.abstained  # a threshold of 0 never vetoes
        assert json.loads(json.dumps(answer.to_json_dict()))["answerability"] == pytest.approx(
            answer.answerability, abs=1e-4
        )


def test_below_the_threshold_the_answer_is_an_abstention_naming_the_estimate(
    tiny_index: Path, tiny_embedder: Embedder, probed_generator: Generator
) -> None:
    free = rag_with(tiny_index, tiny_embedder, probed_generator, abstain_below=0.0)
    estimates = [a.answerability for a in free.ask_batch(QUESTIONS)]
    assert all(e is not None for e in estimates)
    middle = sorted(e for e in estimates if e is not None)[len(estimates) // 2]
    rag = rag_with(tiny_index, tiny_embedder, probed_generator, abstain_below=middle)
    batched, single, streamed = answered_three_ways(rag, QUESTIONS)
    unchanged = free.ask_batch(QUESTIONS)
    for n, estimate in enumerate(estimates):
        assert estimate is not None
        for answer in (batched[n], single[n], streamed[n][0]):
            assert answer.abstained == (estimate < middle)
            if answer.abstained:
                assert answer.answer == ABSTENTION_ANSWER and answer.citations == []
                assert answer.trace is not None
                assert any("answerability check" in note for note in answer.trace.notes)
            else:  # above the threshold the answer is the one without a veto
                assert answer.answer == unchanged[n].answer
        if estimate < middle:
            assert streamed[n][1] == ABSTENTION_ANSWER
    assert any(a.abstained for a in batched) and not all(a.abstained for a in batched)


def test_concurrent_requests_each_get_their_own_prompts_estimate(
    tiny_index: Path, tiny_embedder: Embedder, probed_generator: Generator
) -> None:
    """Several threads generate on one model at once (as ``ragkit serve`` does); each hook
    must read its own prompt's forward pass, never another thread's."""
    from concurrent.futures import ThreadPoolExecutor

    rag = rag_with(tiny_index, tiny_embedder, probed_generator, abstain_below=0.0)
    alone = {q: rag.ask(q).answerability for q in QUESTIONS}
    asked = QUESTIONS * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda q: rag.ask(q).answerability, asked))
    for question, estimate in zip(asked, together, strict=True):
        assert estimate == pytest.approx(alone[question], abs=1e-4), question


def test_a_generator_without_a_probe_reports_nothing_and_never_vetoes(
    tiny_index: Path, tiny_embedder: Embedder, tiny_generator: Generator
) -> None:
    """A profile's default threshold with an adapter that has no probe: no veto, no estimate."""
    assert tiny_generator.answerability_probe is None
    rag = rag_with(tiny_index, tiny_embedder, tiny_generator, abstain_below=None)
    assert rag.generate_step is not None
    rag.generate_step.abstain_below = 1.0  # as a profile's default would set it
    answer = rag.ask(QUESTIONS[0])
    assert answer.answerability is None and not answer.abstained
    assert "answerability" not in answer.to_json_dict()


def test_an_asked_for_threshold_without_a_probe_is_refused_in_one_line(
    tiny_index: Path, tiny_embedder: Embedder, tiny_generator: Generator
) -> None:
    """``--abstain-below 0.9`` with a generator that has no probe must not silently do nothing."""
    from ragkit.rag.generate_step import DecodingError

    rag = rag_with(tiny_index, tiny_embedder, tiny_generator, abstain_below=0.9)
    with pytest.raises(DecodingError, match=r"--abstain-below 0\.9 needs an answerability probe"):
        rag.ask(QUESTIONS[0])
    with pytest.raises(DecodingError, match="needs an answerability probe"):
        list(rag.stream(QUESTIONS[0]))
    off = rag_with(tiny_index, tiny_embedder, tiny_generator, abstain_below=0.0)
    assert off.ask(QUESTIONS[0]).answerability is None  # 0 = never veto: nothing to require


def test_the_threshold_survives_save_and_load(
    tiny_index: Path, tiny_embedder: Embedder, probed_generator: Generator, tmp_path: Path
) -> None:
    rag = rag_with(tiny_index, tiny_embedder, probed_generator, abstain_below=0.25)
    rag.save(tmp_path / "rag.yaml")
    loaded = RAGPipeline.load(tmp_path / "rag.yaml")
    assert loaded.generate_step is not None and loaded.generate_step.abstain_below == 0.25


# -- the probe file --------------------------------------------------------------------------


def test_a_probe_round_trips_through_its_file(tmp_path: Path) -> None:
    probe = random_probe(layer=1)
    path = probe.save(tmp_path)
    assert path.name == PROBE_FILE
    loaded = AnswerabilityProbe.load(tmp_path)
    assert loaded is not None and loaded.layer == 1
    state = [0.3] * HIDDEN
    assert loaded.probability(state) == pytest.approx(probe.probability(state), abs=1e-5)
    assert AnswerabilityProbe.load(tmp_path / "elsewhere") is None


def test_bad_probe_files_are_refused_in_one_line(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / PROBE_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ProbeError, match="cannot read the answerability probe") as info:
        AnswerabilityProbe.load(tmp_path)
    assert "\n" not in str(info.value)
    vector = np.zeros(4, dtype=np.float32)
    save_file({"mean": vector}, str(tmp_path / PROBE_FILE), metadata={"format": "other"})
    with pytest.raises(ProbeError, match="is not a ragkit-answerability-probe/1 file"):
        AnswerabilityProbe.load(tmp_path)
    save_file(
        {"mean": vector, "scale": vector, "weight": vector},
        str(tmp_path / PROBE_FILE),
        metadata={"format": "ragkit-answerability-probe/1", "layer": "1"},
    )
    with pytest.raises(ProbeError, match="lacks bias"):
        AnswerabilityProbe.load(tmp_path)
    with pytest.raises(ProbeError, match="one equal, non-zero length"):
        AnswerabilityProbe(layer=1, mean=(0.0,), scale=(1.0, 1.0), weight=(1.0,), bias=0.0)
    with pytest.raises(ProbeError, match="reads 1 hidden units, the model gave 2"):
        AnswerabilityProbe(layer=1, mean=(0.0,), scale=(1.0,), weight=(1.0,), bias=0.0).logit(
            [0.0, 0.0]
        )


@pytest.fixture(scope="module")
def lora_folder(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny model, as ``ragkit align sft`` would save one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path_factory.mktemp("lora")
    wrapped.save_pretrained(folder)
    return folder


def test_the_adapters_probe_is_loaded_with_it_and_checked_against_the_model(
    tiny_llama_path: Path, lora_folder: Path, tmp_path: Path
) -> None:
    import shutil

    assert (
        Generator(str(tiny_llama_path), adapter=lora_folder).warm_up().answerability_probe is None
    )
    folder = tmp_path / "with-probe"
    shutil.copytree(lora_folder, folder)
    random_probe(layer=1).save(folder)
    generator = Generator(str(tiny_llama_path), adapter=folder).warm_up()
    loaded = generator.answerability_probe
    assert loaded is not None and loaded.layer == 1
    assert loaded.probability([0.2] * HIDDEN) == pytest.approx(
        random_probe(layer=1).probability([0.2] * HIDDEN), abs=1e-5
    )

    wide: Any = AnswerabilityProbe(
        layer=1, mean=(0.0,) * 32, scale=(1.0,) * 32, weight=(1.0,) * 32, bias=0.0
    )
    wide.save(folder)
    with pytest.raises(ProbeError, match="reads 32 hidden units; this model has 64"):
        Generator(str(tiny_llama_path), adapter=folder).warm_up()
    random_probe(layer=3).save(folder)  # the tiny model has 2 layers: hidden states 1 and 2
    with pytest.raises(ProbeError, match=r"hidden state 3; this model has 2 decoder layers"):
        Generator(str(tiny_llama_path), adapter=folder).warm_up()


def test_the_threshold_reaches_the_pipeline_from_the_cli_builder(
    tiny_index: Path, tiny_llama_path: Path
) -> None:
    from ragkit.rag import answering_pipeline

    rag = answering_pipeline(
        tiny_index,
        generator=str(tiny_llama_path),
        backend="transformers",
        decoding="grounded",
        abstain_below=0.3,
        abstain_bias=-2.5,
    )
    assert rag.generate_step is not None and rag.generate_step.abstain_below == 0.3
    assert rag.generate_step.abstain_bias == -2.5
    default = answering_pipeline(tiny_index, generator=str(tiny_llama_path), backend="transformers")
    assert default.generate_step is not None and default.generate_step.abstain_bias == 0.0


def test_an_out_of_range_threshold_is_refused_by_the_cli(tiny_index: Path) -> None:
    from typer.testing import CliRunner

    from ragkit.cli import app

    result = CliRunner().invoke(
        app, ["ask", "Which river?", "--index", str(tiny_index), "--abstain-below", "1.5"]
    )
    assert result.exit_code == 2
    assert "--abstain-below" in result.output
