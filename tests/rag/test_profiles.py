"""Answering profiles: which prompt, decoding and adapter each generator gets by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.errors import RagkitError
from ragkit.generation import Generator
from ragkit.rag import RAGPipeline, answering_pipeline, answering_profile
from ragkit.rag.profiles import GEMMA_PROFILE, GENERIC_PROFILE, SMOLLM2_PROFILE


@pytest.mark.parametrize(
    ("generator", "backend", "expected"),
    [
        (None, "transformers", GEMMA_PROFILE),
        ("default", "transformers", GEMMA_PROFILE),
        ("Gemma3-270M", "transformers", GEMMA_PROFILE),
        ("smollm2", "transformers", SMOLLM2_PROFILE),
        ("some-org/some-model", "transformers", GENERIC_PROFILE),
        (None, "openai", GENERIC_PROFILE),
    ],
)
def test_profiles_follow_the_generator(
    generator: str | None, backend: str, expected: object
) -> None:
    assert answering_profile(generator, backend) == expected


def test_the_default_profile_is_grounded_with_its_adapter() -> None:
    assert GEMMA_PROFILE.decoding == "grounded"
    assert GEMMA_PROFILE.template == "grounded_qa_completion"
    assert GEMMA_PROFILE.adapter == "grounded-qa-gemma"
    assert answering_profile(Generator(None)) == GEMMA_PROFILE  # a backend object: by its model


def test_a_pipeline_gets_its_generators_profile_unless_told_otherwise(
    tiny_index: Path, tiny_embedder: Embedder, tiny_llama_path: Path
) -> None:
    from ragkit.retrieval import DenseRetriever

    retriever = DenseRetriever(Index.open(tiny_index, tiny_embedder), k=1)
    generic = RAGPipeline(retriever, Generator(str(tiny_llama_path), device="cpu"))
    assert generic.generate_step is not None and generic.generate_step.decoding == "free"
    assert not generic.prompt_builder.completion
    grounded = RAGPipeline(
        retriever,
        Generator(str(tiny_llama_path), device="cpu"),
        template="grounded_qa_completion",
        decoding="grounded",
    )
    assert grounded.generate_step is not None and grounded.generate_step.decoding == "grounded"
    assert grounded.prompt_builder.completion
    options = grounded.generate_step.options
    assert options is not None and options.apply_chat_template is False  # verbatim completion


def test_answering_pipeline_refuses_bad_choices_in_one_line(tiny_index: Path) -> None:
    with pytest.raises(RagkitError, match="--decoding must be one of free, grounded"):
        answering_pipeline(tiny_index, decoding="beam")
    with pytest.raises(RagkitError, match="-k must be positive"):
        answering_pipeline(tiny_index, k=0)
