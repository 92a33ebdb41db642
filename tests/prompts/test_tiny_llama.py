"""The real generate path: strategies on ragkit's Generator with a tiny random Llama."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from prompts import (
    ChainOfThought,
    PromptTemplate,
    RecursiveSummary,
    SelfConsistency,
    StructuredOutputError,
    library_template,
    parse_as,
    text_token_counter,
    token_counter,
)


class Spy:
    """Counts generate calls on the real generator."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.batches: list[int] = []

    def generate(self, prompts: list[Any], **options: Any) -> Any:
        self.batches.append(len(prompts))
        return self.generator.generate(prompts, **options)


def test_chain_of_thought_on_a_real_generator(tiny_llama: Any) -> None:
    result = ChainOfThought(tiny_llama, options={"max_new_tokens": 6}).run("What is 2 + 2?")
    assert result.raw and result.completion_tokens >= 1
    assert result.prompt_tokens == tiny_llama.count_tokens(result.prompt)


def test_self_consistency_samples_in_one_batched_call(tiny_llama: Any) -> None:
    spy = Spy(tiny_llama)
    voted = SelfConsistency(spy, n=4, temperature=1.5, seed=7, options={"max_new_tokens": 6}).run(
        "Pick a river."
    )
    assert spy.batches == [4]
    assert sum(voted.votes.values()) == 4
    assert len({s.raw for s in voted.samples}) > 1  # sampling, not four greedy copies
    again = SelfConsistency(tiny_llama, n=4, temperature=1.5, seed=7, options={"max_new_tokens": 6})
    assert [s.raw for s in again.run("Pick a river.").samples] == [s.raw for s in voted.samples]


def test_parse_as_gives_up_with_the_raw_text(tiny_llama: Any) -> None:
    class City(BaseModel):
        name: str

    with pytest.raises(StructuredOutputError) as info:
        parse_as(City, tiny_llama, "Name a city.", retries=1, max_new_tokens=5)
    assert len(info.value.attempts) == 2 and info.value.raw == info.value.attempts[-1]


def test_budgeting_and_summaries_with_the_real_tokenizer(tiny_llama: Any) -> None:
    count = text_token_counter(tiny_llama)
    text = " ".join(["The Rhine flows past Strasbourg."] * 40)
    result = RecursiveSummary(
        tiny_llama, count, max_input_tokens=60, max_depth=2, options={"max_new_tokens": 6}
    ).run(text)
    assert result.levels and result.levels[0] >= 2
    assert result.stopped in {"fits", "max_depth", "no_progress"}
    template = library_template("grounded_qa")
    passages = [{"n": i, "text": "Paris is the capital of France. " * 5} for i in range(1, 9)]
    counter = token_counter(tiny_llama)
    empty = counter(template.render(question="Capital?", passages=[]))
    one = counter(template.render(question="Capital?", passages=passages[:1])) - empty
    budget = empty + 3 * one + one // 2
    fitted = template.render_within(
        budget, counter, "passages", question="Capital?", passages=passages
    )
    assert tiny_llama.count_tokens(fitted.prompt) <= budget
    assert fitted.report.kept == 3 and fitted.report.dropped == [3, 4, 5, 6, 7]
    assert isinstance(PromptTemplate(template="{{ a }}").render(a=1), str)
