"""Answer strategies for the RAG pipeline: which `prompts` steps follow the prompt builder.

Every strategy ends in a step whose output has ``text``, so the citation step follows any of
them unchanged; the pipeline's wiring check verifies this when the pipeline is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from prompts import (
    ChainOfThought,
    Example,
    FewShotStep,
    LeastToMost,
    SelfConsistency,
    SemanticSelector,
)
from ragkit.errors import RagkitError
from ragkit.generation import GeneratorBackend
from ragkit.rag.generate_step import Decoding, GenerateStep

Strategy = Literal["plain", "fewshot", "cot", "self-consistency", "least-to-most"]
STRATEGIES: tuple[str, ...] = ("plain", "fewshot", "cot", "self-consistency", "least-to-most")


def default_examples() -> list[Example]:
    """The built-in grounded-QA demonstrations (shipped with the prompts package)."""
    import prompts

    path = Path(prompts.__file__).parent / "library" / "examples" / "grounded_qa.yaml"
    return [
        Example.model_validate(item) for item in yaml.safe_load(path.read_text(encoding="utf-8"))
    ]


def answer_steps(
    strategy: str,
    generator: GeneratorBackend,
    options: Mapping[str, Any] | None,
    embed: Any | None = None,
    examples: list[Example] | None = None,
    decoding: Decoding = "free",
    abstain_bias: float = 0.0,
    abstain_below: float | None = None,
    require_probe: bool = False,
) -> list[Any]:
    """The steps after the prompt builder for ``strategy``."""
    opts = dict(options or {})
    if strategy == "plain":
        return [
            GenerateStep(
                generator,
                opts,
                decoding=decoding,
                abstain_bias=abstain_bias,
                abstain_below=abstain_below,
                require_probe=require_probe,
            )
        ]
    if strategy == "fewshot":
        demos = examples or default_examples()
        selector: Any = (
            SemanticSelector(demos, embed, k=min(3, len(demos))) if embed is not None else demos
        )
        return [
            FewShotStep(
                selector,
                count_tokens=generator.count_tokens,
                max_tokens=generator.max_prompt_tokens(opts),
            ),
            GenerateStep(generator, opts),
        ]
    long_opts = {**opts, "max_new_tokens": max(int(opts.get("max_new_tokens", 128)), 192)}
    if strategy == "cot":
        return [ChainOfThought(generator, options=long_opts)]
    if strategy == "self-consistency":
        return [SelfConsistency(generator, n=5, temperature=0.7, seed=0, options=long_opts)]
    if strategy == "least-to-most":
        return [LeastToMost(generator, max_subquestions=3, max_depth=1, options=opts)]
    raise RagkitError(f"unknown strategy {strategy!r} (use one of: {', '.join(STRATEGIES)})")
