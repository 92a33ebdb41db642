"""How each generator answers by default: prompt form, decoding, adapter, abstention bias.

Why per model: the best prompt and decoding depend on the model. A base model (Gemma 3 270M)
continues a completion prompt well and, constrained to passage spans, answers extractively; a
chat model (SmolLM2-Instruct) wants its chat template and writes sentences, which a span
constraint turns into random spans. The values below were chosen on the dev split of
``benchmarks/answer_quality.py`` (Normans paragraphs 30-38) and reported on the other article
(docs/answer-quality.md). Anything not listed (a hub id, an API backend) gets the chat template
and free decoding, which every backend supports.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ragkit.generation.backends.base import can_constrain_tokens
from ragkit.generation.checkpoints import DEFAULT_GENERATOR, GEMMA_ALIASES, SMOLLM2_ALIASES
from ragkit.models import DEFAULT_EMBEDDER
from ragkit.rag.generate_step import Decoding


class AnsweringProfile(BaseModel):
    """The answering defaults of one generator; every field can be overridden per call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str
    decoding: Decoding
    adapter: str | None = None
    abstain_bias: float = 0.0
    abstain_below: float | None = None
    """Abstain when the adapter's answerability probe gives P(answerable) below this (None:
    the probe, if any, is reported but decides nothing)."""
    max_new_tokens: int = 128
    max_prompt_tokens: int | None = None
    """Cap on the prompt below the model's context (None: the context): lower-ranked passages
    are dropped to fit, with a note. An adapter answers well on prompts as long as it was
    trained on, and a CPU reads a 30k-token prompt (``-k 1000``) for minutes."""
    min_relevance: float | None = None
    """Grounded decoding: decline when no retrieved passage reaches this cosine similarity to
    the question (:class:`~ragkit.rag.relevance.RelevanceGate`; None: no gate). Cosines are
    an embedder's own scale, so the profile's gate applies to indexes built with
    ``relevance_embedder`` only (an explicit ``min_relevance`` applies to any)."""
    relevance_embedder: str = DEFAULT_EMBEDDER
    quantize: str | None = None
    """CPU weight quantisation (:mod:`ragkit.generation.quantization`); None: as loaded."""


GEMMA_PROFILE = AnsweringProfile(
    template="grounded_qa_completion",
    decoding="grounded",
    adapter="grounded-qa-gemma",
    # third adapter (session 14): chosen on 161 dev questions (Normans dev + synthetic domain E)
    # by an F1-first rule among the operating points at which the Strasbourg question is
    # answered; at -4 ... -2 this adapter abstains on it (docs/answer-quality.md)
    abstain_bias=-6.0,
    # the adapter's answerability probe vetoes an answer below P(answerable) 0.1: the largest
    # threshold that costs no answerable dev question (measured at bias -2; docs/answer-quality.md)
    abstain_below=0.1,
    max_new_tokens=32,
    # the adapter's SFT sequences were at most 1536 tokens (sft_grounded_gemma_mixed3.yaml);
    # k = 4 wiki or SQuAD passages make 550-900, so the default k never reaches it
    max_prompt_tokens=1536,
    # off-topic questions (session 15): the highest MiniLM threshold gating at most 2 % of the
    # answerable selection questions (0.2519, rounded down); on held-out corpora it gated 1.1 %
    # of answerable questions and 83.7 % of off-topic ones (docs/answer-quality.md)
    min_relevance=0.25,
)
SMOLLM2_PROFILE = AnsweringProfile(template="grounded_qa", decoding="free")
GENERIC_PROFILE = AnsweringProfile(template="grounded_qa", decoding="free")


LOCAL_BACKENDS = frozenset({"transformers", "auto", "llamacpp"})
"""Backends that run the packaged models themselves (and can constrain tokens)."""


def answering_profile(generator: Any = None, backend: str = "transformers") -> AnsweringProfile:
    """The profile of ``generator``: a model name/path, None (the default) or a backend object.

    A packaged model keeps its profile on either local backend (the same weights, adapter and
    decoding, so the same answers); an API or vLLM backend gets the generic one.
    """
    if backend not in LOCAL_BACKENDS:
        return GENERIC_PROFILE
    name = generator
    if generator is not None and not isinstance(generator, str):
        config = getattr(generator, "config", None)
        if not can_constrain_tokens(generator):
            return GENERIC_PROFILE
        name = getattr(config, "model", None)
    key = (name or "default").strip().lower()
    key = DEFAULT_GENERATOR if key == "default" else key
    if key in GEMMA_ALIASES:
        return GEMMA_PROFILE
    if key in SMOLLM2_ALIASES:
        return SMOLLM2_PROFILE
    return GENERIC_PROFILE


def chosen_adapter(profile: AnsweringProfile, adapter: str | None) -> str | None:
    """The adapter to load: None = the profile's; ``"none"`` (or empty) = no adapter."""
    if adapter is None:
        return profile.adapter
    return None if adapter.strip().lower() in ("", "none") else adapter
