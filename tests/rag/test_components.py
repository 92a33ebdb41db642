"""Every registered pipeline component round-trips through a YAML pipeline file.

The test is parametrised over the registry itself: a component registered without a sample
below fails here, so nothing savable can go untested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from prompts import (
    COMPONENTS,
    ChainOfThought,
    ChatTemplate,
    ChoiceParser,
    Example,
    FewShotStep,
    LastNumberParser,
    LeastToMost,
    PromptTemplate,
    RandomSelector,
    RecursiveSummary,
    SelfConsistency,
    SelfRefine,
    SemanticSelector,
    StructuredStep,
    text_token_counter,
)
from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.generation import Generator
from ragkit.pipeline import (
    LoadContext,
    Parallel,
    Pipeline,
    PipelineError,
    component_class,
    component_spec,
    load_pipeline,
    register_component,
    registered_components,
    save_pipeline,
)
from ragkit.query_transforms import HyDERetriever, MultiQueryRetriever
from ragkit.rag import CitationStep, GenerateStep, PromptBuilder
from ragkit.rag.relevance import RelevanceGate
from ragkit.retrieval import (
    BM25Retriever,
    CrossEncoderReranker,
    DenseRetriever,
    HybridRetriever,
    MMRReranker,
    RankFusion,
    RerankedRetriever,
)


class Person(BaseModel):
    name: str
    age: int


EXAMPLES = [
    Example(input="How old is Ann?", output="10", rationale="Ann is 10.", key="Ann's age"),
    Example(input="Where is Paris?", output="France", fields={"topic": "geo"}),
    Example(input="What flows through Paris?", output="The Seine"),
]
TEMPLATE = PromptTemplate(
    name="custom", template="{% for p in passages %}{{ p.text }} {% endfor %}Q: {{ question }}\nA:"
)
ANSWER = ChatTemplate.model_validate(
    {
        "name": "my_answer",
        "messages": [
            {"role": "user", "content": "{{ context }} {{ question }} {{ steps | length }}"}
        ],
    }
)


@dataclass
class Resources:
    generator: Generator
    index: Any
    embedder: Embedder

    @property
    def context(self) -> dict[str, Any]:
        """What a caller re-attaches: every test loads with the same live objects."""
        return {
            "generator": self.generator,
            "index": self.index,
            "embed": self.embedder.encode,
            "schemas": {"Person": Person},
        }


SAMPLES: dict[str, Callable[[Resources], Any]] = {
    "dense_retriever": lambda r: DenseRetriever(r.index, k=3),
    "bm25_retriever": lambda r: BM25Retriever(r.index, k=2),
    "hybrid_retriever": lambda r: HybridRetriever(
        r.index, k=3, mode="weighted", rrf_k=30, weights=(0.7, 0.3), candidates=12
    ),
    "rank_fusion": lambda r: RankFusion(k=3, rrf_k=10),
    "mmr": lambda r: MMRReranker(r.index, k=2, diversity=0.6),
    "cross_encoder": lambda r: CrossEncoderReranker(
        "no/such-model", k=2, batch_size=4, device="cpu"
    ),
    "reranked_retriever": lambda r: RerankedRetriever(
        DenseRetriever(r.index, k=2), MMRReranker(r.index, k=2, diversity=0.1), candidates=7
    ),
    "multi_query_retriever": lambda r: MultiQueryRetriever(
        BM25Retriever(r.index, k=2), r.generator, n=2, k=3, candidates=5, max_new_tokens=8, rrf_k=20
    ),
    "hyde_retriever": lambda r: HyDERetriever(
        r.index, r.generator, k=2, question_weight=0.3, max_new_tokens=8
    ),
    "parallel": lambda r: Parallel(dense=DenseRetriever(r.index, k=2), bm25=BM25Retriever(r.index)),
    "prompt_builder": lambda r: PromptBuilder(
        TEMPLATE, budget=r.generator, max_passage_chars=90, max_prompt_tokens=400
    ),
    "relevance_gate": lambda r: RelevanceGate(0.3, r.index),
    "generator": lambda r: GenerateStep(
        r.generator,
        {"max_new_tokens": 3, "stop": ["\n\n"]},
        decoding="grounded",
        abstain_bias=-1.5,
        max_answer_tokens=5,
    ),
    "citations": lambda r: CitationStep(),
    "fewshot": lambda r: FewShotStep(
        SemanticSelector(EXAMPLES, r.embedder.encode, k=2),
        count_tokens=r.generator.count_tokens,
        max_tokens=300,
        order="best_first",
        with_rationale=True,
    ),
    "chain_of_thought": lambda r: ChainOfThought(
        r.generator,
        parser=LastNumberParser(),
        examples=EXAMPLES[:1],
        instruction="Think first.",
        options={"max_new_tokens": 4},
    ),
    "self_consistency": lambda r: SelfConsistency(
        r.generator,
        n=3,
        temperature=0.5,
        seed=4,
        parser=ChoiceParser(choices="AB"),
        examples=RandomSelector(EXAMPLES, k=1, seed=2),
        options={"max_new_tokens": 4},
    ),
    "least_to_most": lambda r: LeastToMost(
        r.generator,
        max_subquestions=2,
        max_depth=2,
        max_tokens=100,
        options={"max_new_tokens": 4},
        answer_template=ANSWER,
    ),
    "self_refine": lambda r: SelfRefine(
        r.generator, max_rounds=1, max_tokens=50, stop_marker="OK", options={"max_new_tokens": 4}
    ),
    "recursive_summary": lambda r: RecursiveSummary(
        r.generator, text_token_counter(r.generator), 40, max_depth=2, max_words=20
    ),
    "structured": lambda r: StructuredStep(
        Person, r.generator, retries=1, options={"max_new_tokens": 4}, constrained=True
    ),
}

BUILTIN = [
    name
    for name in registered_components()
    if (cls := component_class(name)) is not None
    and cls.__module__.split(".")[0] in {"ragkit", "prompts"}
]


@pytest.fixture(scope="module")
def resources(tiny_index: Path, tiny_embedder: Embedder, tiny_generator: Generator) -> Resources:
    return Resources(tiny_generator, Index.open(tiny_index, tiny_embedder), tiny_embedder)


def test_the_builtin_components_are_registered() -> None:
    assert {"generator", "prompt_builder", "citations", "dense_retriever"} <= set(BUILTIN)
    listed: tuple[Any, ...] = COMPONENTS
    assert {component_class(c.component_name) for c in listed} == set(listed)


@pytest.mark.parametrize("name", BUILTIN)
def test_component_round_trips_through_yaml(
    name: str, resources: Resources, tmp_path: Path
) -> None:
    assert name in SAMPLES, f"registered component {name!r} has no sample in this test: add one"
    step = SAMPLES[name](resources)
    assert type(step) is component_class(name)
    path = tmp_path / "one.yaml"
    save_pipeline(Pipeline([step], name=name), path)
    text = path.read_text()
    assert f"type: {name}" in text and "!!python" not in text
    loaded: Any = load_pipeline(path, resources.context).steps[0]
    assert type(loaded) is type(step)
    assert component_spec(loaded) == component_spec(step)
    # shared resources come back as the live objects, not copies
    rebuilt: Any = loaded
    if hasattr(step, "generator"):
        assert rebuilt.generator is resources.generator
    if name == "prompt_builder":
        assert rebuilt.budget is resources.generator
    if name == "relevance_gate":
        assert rebuilt.index is resources.index
    # saving what was loaded writes the same file
    again = tmp_path / "again.yaml"
    save_pipeline(Pipeline([loaded], name=name), again)
    assert again.read_text() == text


def test_a_missing_resource_is_named(resources: Resources, tmp_path: Path) -> None:
    path = tmp_path / "cot.yaml"
    save_pipeline(Pipeline([SAMPLES["chain_of_thought"](resources)]), path)
    with pytest.raises(
        PipelineError, match=r"chain_of_thought needs the shared resource 'generator'"
    ):
        load_pipeline(path)


def test_unsavable_parameters_are_refused_when_saving(resources: Resources, tmp_path: Path) -> None:
    odd = ChainOfThought(resources.generator, options={"logits_processors": [object()]})
    with pytest.raises(
        PipelineError, match=r"chain_of_thought\.params\.options\.logits_processors\[0\]"
    ):
        save_pipeline(Pipeline([odd]), tmp_path / "odd.yaml")
    custom = SelfConsistency(resources.generator, normalize=str.lower)
    with pytest.raises(PipelineError, match="custom normalize function cannot be saved"):
        save_pipeline(Pipeline([custom]), tmp_path / "odd.yaml")


def test_a_version_1_file_still_loads_with_the_budget_bound(
    resources: Resources, tmp_path: Path
) -> None:
    """Files written before ``resources``: the generator step's model becomes the budget."""
    config = resources.generator.config.model_dump(mode="json", exclude={"options"})
    data = {
        "format": "ragkit-pipeline",
        "version": 1,
        "name": "rag",
        "inputs": {"question": "str"},
        "steps": [
            {
                "type": "dense_retriever",
                "params": {"index": str(resources.index.directory), "k": 2},
            },
            {
                "type": "prompt_builder",
                "params": {"template": "grounded_qa", "max_passage_chars": None},
            },
            {"type": "generator", "params": {**config, "options": {"max_new_tokens": 3}}},
            {"type": "citations", "params": {}},
        ],
    }
    import yaml

    path = tmp_path / "v1.yaml"
    path.write_text(yaml.safe_dump(data))
    pipeline = load_pipeline(path)
    builder, generate = pipeline.steps[1], pipeline.steps[2]
    assert builder.budget is generate.generator
    assert generate.generator is not resources.generator  # built from the file


class Shout(BaseModel):
    text: str


class Upper:
    """A user step saved by a factory function, as before component classes existed."""

    component_name = "upper"

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix

    def run(self, question: str) -> Shout:
        return Shout(text=question.upper() + self.suffix)

    def to_config(self) -> dict[str, Any]:
        return {"suffix": self.suffix}


def test_register_component_with_a_factory_still_works(tmp_path: Path) -> None:
    register_component("upper", lambda params: Upper(**params))
    path = tmp_path / "user.yaml"
    save_pipeline(Pipeline([Upper("!")]), path)
    loaded = load_pipeline(path)
    assert loaded.run(question="hi")["text"] == "HI!"


def test_a_context_object_is_shared_by_the_steps(resources: Resources, tmp_path: Path) -> None:
    """One open index for every retriever on it; its embedder feeds the few-shot selector."""
    path = tmp_path / "shared.yaml"
    steps = [
        Parallel(dense=DenseRetriever(resources.index), bm25=BM25Retriever(resources.index)),
        RankFusion(k=2),
    ]
    save_pipeline(Pipeline(steps, inputs={"question": str}), path)
    context = LoadContext()
    loaded = load_pipeline(path, context)
    parallel = loaded.steps[0]
    assert parallel.branches["dense"].index is parallel.branches["bm25"].index
    assert context.get("index") is parallel.branches["dense"].index
    assert context.get("embed") is not None
    assert len(loaded.run(question="capital of Alsace")["hits"]) == 2
