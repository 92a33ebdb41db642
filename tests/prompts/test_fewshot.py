"""Few-shot: selectors, the embedding cache, FewShotTemplate and FewShotStep with budgets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from prompts import (
    EmbeddingCache,
    Example,
    FewShotStep,
    FewShotTemplate,
    FixedSelector,
    LengthSelector,
    MMRSelector,
    RandomSelector,
    SemanticSelector,
    whitespace_tokens,
)

POOL = [
    Example(input="What river flows through Paris?", output="The Seine"),
    Example(input="What river flows past Strasbourg?", output="The Rhine"),
    Example(input="Which river flows through Paris, France?", output="Seine"),
    Example(input="When did the war on terror begin?", output="2001"),
    Example(input="What does culture include?", output="music and art"),
]


def test_fixed_and_random_selectors() -> None:
    assert FixedSelector(POOL, k=2).select("anything") == POOL[:2]
    first = RandomSelector(POOL, k=3, seed=1).select("q")
    assert first == RandomSelector(POOL, k=3, seed=1).select("q")
    assert len(set(first)) == 3 and set(first) <= set(POOL)
    draws = {tuple(RandomSelector(POOL, k=3, seed=s).select("q")) for s in range(8)}
    assert len(draws) > 1
    assert RandomSelector(POOL, k=10).select("q") == RandomSelector(POOL, k=10).select("q")
    with pytest.raises(ValueError):
        RandomSelector(POOL, k=-1)


def test_semantic_selector_ranks_by_similarity_and_caches(embed: Callable) -> None:
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return embed(texts)

    selector = SemanticSelector(POOL, counting, k=2)
    picked = selector.select("What river flows through Paris?")
    assert picked[0] == POOL[0]
    assert picked[1] == POOL[2]
    selector.select("What river flows through Paris?")
    selector.select("When did the war begin?")
    # the pool once, then each new text once: the first query is an example's own text (so
    # already cached) and repeating a query costs nothing
    assert [len(c) for c in calls] == [5, 1]
    assert calls[1] == ["When did the war begin?"]
    assert selector.cache.calls == 2


def test_embedding_cache_rejects_a_wrong_shape() -> None:
    cache = EmbeddingCache(lambda texts: np.zeros((len(texts) + 1, 4)))
    with pytest.raises(ValueError, match="shape"):
        cache(["a"])


def test_mmr_prefers_diverse_examples(embed: Callable) -> None:
    query = "What river flows through Paris?"
    similar = SemanticSelector(POOL, embed, k=2).select(query)
    diverse = MMRSelector(POOL, embed, k=2, diversity=0.7).select(query)
    assert similar == [POOL[0], POOL[2]]  # two near-duplicates
    assert diverse[0] == POOL[0]
    assert diverse[1] != POOL[2]
    assert MMRSelector(POOL, embed, k=2, diversity=0.0).select(query) == similar
    with pytest.raises(ValueError):
        MMRSelector(POOL, embed, k=2, diversity=1.5)


def test_length_selector_fits_budget_and_skips_long_examples() -> None:
    long = Example(input="word " * 50, output="x")
    pool = [POOL[0], long, POOL[3], POOL[4]]
    selector = LengthSelector(pool, whitespace_tokens, budget=22)  # costs: 7, 51, 8, 7
    chosen = selector.select("q")
    assert chosen == [POOL[0], POOL[3], POOL[4]]
    assert LengthSelector(pool, whitespace_tokens, budget=21).select("q") == [POOL[0], POOL[3]]
    assert LengthSelector(pool, whitespace_tokens, budget=22, k=1).select("q") == [POOL[0]]
    ranked = LengthSelector(pool, whitespace_tokens, 22, ranker=FixedSelector(pool[::-1]))
    assert ranked.select("q")[0] == POOL[4]


def test_fewshot_template_renders_examples_nearest_to_the_query(embed: Callable) -> None:
    template = FewShotTemplate(
        SemanticSelector(POOL, embed, k=2),
        prefix="Answer briefly about {{ topic }}.",
        example_template="Q: {{ input }}\nA: {{ output }}",
        suffix="Q: {{ input }}\nA:",
    )
    assert template.variables == ["input", "topic"]
    text = template.render(input="What river flows through Paris?", topic="rivers")
    blocks = text.split("\n\n")
    assert blocks[0] == "Answer briefly about rivers."
    # best_last: the most similar example sits right before the query
    assert blocks[-2] == "Q: What river flows through Paris?\nA: The Seine"
    assert blocks[-1] == "Q: What river flows through Paris?\nA:"
    with pytest.raises(ValueError, match="'topic'"):
        template.render(input="q")
    with pytest.raises(ValueError, match="'other'"):
        template.render(input="q", topic="t", other=1)


def test_fewshot_template_budget_drops_lowest_ranked() -> None:
    full = FewShotTemplate(POOL, order="best_first").render(input="Which river?")
    limit = whitespace_tokens(full) - 4
    template = FewShotTemplate(
        POOL, order="best_first", count_tokens=whitespace_tokens, max_tokens=limit
    )
    built = template.build(input="Which river?")
    assert whitespace_tokens(built.prompt) <= limit
    assert built.examples == POOL[: len(built.examples)]
    assert len(built.examples) < len(POOL)
    assert built.notes and "examples" in built.notes[0]


def test_fewshot_template_needs_the_query_in_the_suffix() -> None:
    with pytest.raises(ValueError, match="query variable"):
        FewShotTemplate(POOL, suffix="no query here")


def test_fewshot_step_inserts_turns_before_the_question(embed: Callable) -> None:
    step = FewShotStep(SemanticSelector(POOL, embed, k=2))
    prompt = [
        {"role": "system", "content": "Use the passages."},
        {"role": "user", "content": "Passages: ... Question: What river flows through Paris?"},
    ]
    out = step.run(prompt=prompt, question="What river flows through Paris?")
    roles = [m["role"] for m in out.prompt]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert out.prompt[-1] == prompt[-1]
    assert out.prompt[-3]["content"] == POOL[0].input  # best last
    assert out.prompt[-2]["content"] == POOL[0].output
    plain = step.run(prompt="Question: x", question="What river flows through Paris?")
    assert isinstance(plain.prompt, str) and plain.prompt.endswith("Question: x")
    assert "Input: What river flows through Paris?\nOutput: The Seine" in plain.prompt


def test_fewshot_step_budget_reports_dropped() -> None:
    step = FewShotStep(POOL, count_tokens=whitespace_tokens, max_tokens=12, order="best_first")
    out = step.run(prompt="Question: which river?", question="which river?")
    assert whitespace_tokens(out.prompt) <= 12
    assert out.examples == POOL[: len(out.examples)]
    assert out.notes
