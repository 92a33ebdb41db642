"""The strategies as ragkit pipeline steps: typed signatures, wiring, traces with call trees."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from prompts import (
    ChainOfThought,
    Example,
    FewShotStep,
    LeastToMost,
    RecursiveSummary,
    SelfConsistency,
    SelfRefine,
    StructuredStep,
    whitespace_tokens,
)
from ragkit.pipeline import Pipeline, signature_of


class Built(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: list[dict[str, str]] | str
    passages: list[dict[str, object]]


class FakePromptBuilder:
    """Stands in for ragkit's PromptBuilder: same output names and prompt annotation."""

    def run(self, question: str) -> Built:
        return Built(
            prompt=[{"role": "user", "content": f"Passages: [1] Ann is 10.\nQuestion: {question}"}],
            passages=[{"n": 1, "text": "Ann is 10."}],
        )


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    final: str


class Cite:
    """Stands in for ragkit's CitationStep: consumes ``text``."""

    def run(self, text: str) -> Answer:
        return Answer(final=text)


def test_every_strategy_has_a_typed_step_signature(scripted: type) -> None:
    gen = scripted([])
    steps = [
        ChainOfThought(gen),
        SelfConsistency(gen),
        LeastToMost(gen),
        SelfRefine(gen),
        RecursiveSummary(gen, whitespace_tokens, 10),
        FewShotStep([]),
        StructuredStep(Answer, gen),
    ]
    for step in steps:
        signature = signature_of(step)
        assert signature.inputs, step
    assert "text" in signature_of(ChainOfThought(gen)).outputs
    assert "confidence" in signature_of(SelfConsistency(gen)).outputs


def test_fewshot_then_self_consistency_in_a_pipeline(scripted: type) -> None:
    gen = scripted(["Answer: 10", "Answer: 10", "Answer: 11"])
    pipeline = Pipeline(
        [
            FakePromptBuilder(),
            FewShotStep([Example(input="Bob is 3. How old is Bob?", output="3")]),
            SelfConsistency(gen, n=3),
            Cite(),
        ],
        inputs={"question": str},
    )
    result = pipeline.run(question="How old is Ann?")
    assert result["final"] == "10"
    assert result["confidence"] == 2 / 3
    sent = gen.calls[0][0][0]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    traced = {s.step: s.outputs for s in result.trace.steps}
    assert len(traced["SelfConsistency"]["calls"]["children"][0]["children"]) == 3


def test_least_to_most_takes_passages_from_the_pipeline(scripted: type) -> None:
    gen = scripted(["1. Who is Ann?\n2. How old is Ann?", "a person", "10", "Ann is 10"])
    pipeline = Pipeline([FakePromptBuilder(), LeastToMost(gen), Cite()], inputs={"question": str})
    result = pipeline.run(question="How old is Ann?")
    assert result["final"] == "Ann is 10"
    assert all("[1] Ann is 10." in p for p in gen.prompts)
    tree = next(s for s in result.trace.steps if s.step == "LeastToMost").outputs["calls"]
    assert tree["kind"] == "least_to_most" and len(tree["children"]) == 4
