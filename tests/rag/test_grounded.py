"""Grounded span decoding on a tiny random model: every answer is a verbatim, exactly cited span."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.generation import Generator
from ragkit.generation.grounded import (
    ABSTAIN_PHRASE,
    SpanAutomaton,
    is_word_start,
    locate_span,
    table_from_pieces,
    token_table,
)
from ragkit.rag import RAGPipeline
from ragkit.rag.citations import ABSTENTION_ANSWER
from ragkit.rag.generate_step import DecodingError, GenerateStep, ground
from ragkit.rag.schema import Passage
from ragkit.retrieval import DenseRetriever

from .conftest import answered_three_ways

QUESTIONS = [
    "What is the capital of Alsace?",
    "Which river flows through Paris?",
    "When did the war on terror begin?",
    "What does culture include?",
]


def grounded_rag(index: Path, embedder: Embedder, generator: Generator, **kw: Any) -> RAGPipeline:
    retriever = DenseRetriever(Index.open(index, embedder), k=3)
    return RAGPipeline(
        retriever,
        generator,
        template="grounded_qa_completion",
        decoding="grounded",
        options={"max_new_tokens": 10},
        **kw,
    )


@pytest.fixture(scope="module")
def rag(file_index: Path, tiny_embedder: Embedder, tiny_generator: Generator) -> RAGPipeline:
    # a random model is as likely to copy the prompt's "not in the passages" as anything: bias
    # it away so that the spans themselves get exercised
    return grounded_rag(file_index, tiny_embedder, tiny_generator, abstain_bias=-50.0)


def test_every_answer_is_a_passage_span_cited_by_its_exact_source_offsets(
    rag: RAGPipeline,
) -> None:
    answers = rag.ask_batch(QUESTIONS)
    answered = [a for a in answers if not a.abstained]
    assert answered, "the random model abstained on every question"
    for answer in answered:
        assert len(answer.citations) == 1
        citation = answer.citations[0]
        assert citation.quote == answer.answer
        assert any(answer.answer in p.text for p in answer.passages)
        source = Path(citation.source).read_text(encoding="utf-8")
        assert citation.quote_start is not None and citation.quote_end is not None
        assert source[citation.quote_start : citation.quote_end] == answer.answer
        assert not citation.inferred


def test_batched_equals_one_by_one_equals_streamed(rag: RAGPipeline) -> None:
    batched, single, streamed_with_text = answered_three_ways(rag, QUESTIONS)
    for answer, pieces in streamed_with_text:
        if not answer.abstained:
            assert pieces.startswith(answer.answer)  # no leading space either
    streamed = [answer for answer, _ in streamed_with_text]
    for a, b, c in zip(batched, single, streamed, strict=True):
        assert (a.answer, a.abstained) == (b.answer, b.abstained) == (c.answer, c.abstained)
        assert [x.model_dump() for x in a.citations] == [x.model_dump() for x in c.citations]
    trace = streamed[0].trace
    assert trace is not None and all(s.seconds > 0.0 for s in trace.steps)  # every step timed
    assert [s.step for s in trace.steps] == [s.step for s in single[0].trace.steps]  # type: ignore[union-attr]


def test_abstention_path(
    file_index: Path, tiny_embedder: Embedder, tiny_generator: Generator
) -> None:
    rag = grounded_rag(file_index, tiny_embedder, tiny_generator, abstain_bias=100.0)
    answer = rag.ask(QUESTIONS[0])
    assert answer.abstained
    assert answer.answer == ABSTENTION_ANSWER
    assert answer.citations == []
    assert answer.trace is not None
    assert any("abstained" in note for note in answer.trace.notes)


def test_no_passages_is_an_abstention_not_a_crash(
    file_index: Path, tiny_embedder: Embedder, tiny_generator: Generator
) -> None:
    rag = grounded_rag(file_index, tiny_embedder, tiny_generator)
    answer = rag.ask(QUESTIONS[0], filters={"format": "no-such-format"})
    assert answer.abstained and answer.citations == []
    streamed = rag.stream(QUESTIONS[0], filters={"format": "no-such-format"})
    assert "".join(streamed) == ABSTENTION_ANSWER


def test_save_and_load_keep_the_decoding(rag: RAGPipeline, tmp_path: Path) -> None:
    path = tmp_path / "rag.yaml"
    rag.save(path)
    loaded = RAGPipeline.load(path)
    assert loaded.generate_step is not None
    assert loaded.generate_step.decoding == "grounded"
    assert loaded.ask(QUESTIONS[1]).answer == rag.ask(QUESTIONS[1]).answer


def test_a_backend_that_cannot_constrain_tokens_is_refused_in_one_line() -> None:
    from ragkit.generation.backends import OpenAIGenerator

    with pytest.raises(DecodingError, match=r"^decoding 'grounded' needs a backend .*transformers"):
        GenerateStep(OpenAIGenerator("some-model"), decoding="grounded")


# -- the automaton alone ----------------------------------------------------------------------


def test_token_bytes_round_trip(tiny_generator: Generator) -> None:
    tokenizer = tiny_generator.tokenizer
    table = token_table(tokenizer)
    reverse = table.by_id
    text = " The Rhine river flows past Strasbourg."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert b"".join(reverse[i] for i in ids) == text.encode()


def test_automaton_allows_only_spans_starting_at_words(tiny_generator: Generator) -> None:
    tokenizer = tiny_generator.tokenizer
    table = token_table(tokenizer)
    passage = "Paris is the capital of France."
    automaton = SpanAutomaton([passage], table, tiny_generator.eos_token_ids)
    reverse = table.by_id
    first = automaton.allowed([])
    assert first is not None
    for token in first.ids:
        piece = reverse[token].lstrip(b" ")
        data = passage.encode()
        starts = [
            p for p in range(len(data)) if data.startswith(piece, p) and is_word_start(data, p)
        ]
        assert starts or ABSTAIN_PHRASE.encode().startswith(piece), reverse[token]
    # walk one span: every step allows the next token of " capital of France"
    ids = tokenizer(" capital of France", add_special_tokens=False)["input_ids"]
    for i, token in enumerate(ids):
        step = automaton.allowed(ids[:i])
        assert step is not None and token in step.ids
    end = automaton.allowed(ids)
    assert end is not None and set(tiny_generator.eos_token_ids) <= set(end.ids)
    # mid-word ("capit") cannot end
    partial = tokenizer(" capit", add_special_tokens=False)["input_ids"]
    if all(automaton.allowed(partial[:i]) for i in range(len(partial))):
        after = automaton.allowed(partial)
        if after is not None and reverse[partial[-1]].endswith(b"capit"):
            assert not set(tiny_generator.eos_token_ids) & set(after.ids)


def test_locate_span_prefers_the_first_passage_and_word_starts() -> None:
    sources = ["the capital is Paris", "Paris, France"]
    assert locate_span(" Paris", sources) == locate_span("Paris.", sources)
    found = locate_span("Paris", sources)
    assert found is not None and (found.source, found.start, found.end) == (0, 15, 20)
    assert locate_span("apital", sources) is None  # mid-word
    assert locate_span("Paris, France", sources) is not None
    assert locate_span("Berlin", sources) is None


def test_an_article_alone_is_not_an_answer(tiny_generator: Generator) -> None:
    tokenizer = tiny_generator.tokenizer
    automaton = SpanAutomaton(
        ["a river flows past the city"], token_table(tokenizer), tiny_generator.eos_token_ids
    )
    eos = set(tiny_generator.eos_token_ids)
    article = tokenizer(" a", add_special_tokens=False)["input_ids"]
    after_article = automaton.allowed(article)
    assert after_article is not None and not eos & set(after_article.ids)
    words = tokenizer(" a river", add_special_tokens=False)["input_ids"]
    after_words = automaton.allowed(words)
    assert after_words is not None and eos <= set(after_words.ids)


def test_preload_loads_a_background_loadable_generator_while_the_caller_goes_on(
    file_index: Path,
    tiny_embedder: Embedder,
    tiny_generator: Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "generation"))
    from test_llamacpp_backend import BigramModel

    from ragkit.generation.backends import LlamaCppGenerator

    # the transformers generator loads in the foreground (imports in two threads can deadlock)
    assert grounded_rag(file_index, tiny_embedder, tiny_generator).preload() is None
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    built: list[int] = []

    def loader(*args: Any) -> BigramModel:
        built.append(1)
        return BigramModel(4096)

    fast = LlamaCppGenerator("m.gguf", loader=loader)
    fast.gguf_path = lambda: Path("m.gguf")  # type: ignore[method-assign]
    rag = grounded_rag(file_index, tiny_embedder, fast)  # type: ignore[arg-type]
    thread = rag.preload()
    assert thread is not None
    thread.join(timeout=30)
    assert fast.is_loaded and built == [1] and fast._table is not None  # grounded: table too
    rag.ask("Where is the bridge?")
    assert built == [1]  # the answer used the preloaded model


def test_a_word_level_vocabulary_dead_end_ends_the_row_as_an_abstention() -> None:
    # no token writes the space after "the": the span cannot go on and "the" answers nothing
    table = table_from_pieces([None, b"the", b"cat", b"sat"])
    automaton = SpanAutomaton(["the cat sat"], table, [0], abstain=None)
    after_article = automaton.allowed([1])
    assert after_article is not None and list(after_article.ids) == [0]
    after_word = automaton.allowed([2])
    assert after_word is not None and list(after_word.ids) == [0]
    passages = [
        Passage(n=1, chunk_id="c", source="s.txt", start=0, end=11, text="the cat sat", score=1.0)
    ]
    assert ground("the", passages).reason == "the span holds no answer word"
    assert ground("the", passages).abstained
    assert not ground("cat", passages).abstained


def test_abstention_options_with_free_decoding_are_refused_in_one_line(
    file_index: Path, tiny_embedder: Embedder, tiny_generator: Generator
) -> None:
    """Free decoding has no abstention path: an explicit bias or threshold would do nothing."""
    with Index.open(file_index, tiny_embedder) as index:
        options: list[dict[str, float]] = [
            {"abstain_bias": -2.0},
            {"abstain_below": 0.3},
            {"min_relevance": 0.0},  # a real threshold (cosine 0), unlike a bias of 0
        ]
        for option in options:
            with pytest.raises(DecodingError, match="works with grounded decoding only"):
                RAGPipeline(DenseRetriever(index, k=2), tiny_generator, decoding="free", **option)
        off = RAGPipeline(
            DenseRetriever(index, k=2), tiny_generator, decoding="free", min_relevance=-1
        )
        assert off.min_relevance == -1.0  # "no gate" is no request


def test_a_first_token_of_the_abstention_commits_to_it() -> None:
    """ "no" begins both "not in the passages" and the passage's "now": once chosen (the bias
    favours it), only the abstention may follow, so a large bias means abstain, not "now"."""
    pieces: list[bytes | None] = [None, b"no", b"w", b"t", b" in", b" the", b" passages"]
    pieces += [b"it", b" is", b" now"]
    table = table_from_pieces(pieces)
    automaton = SpanAutomaton(["it is now"], table, [0], abstain_bias=50.0)
    first = automaton.allowed([])
    assert first is not None and first.bias == {1: 50.0}  # "no": the phrase's only first token
    after_no = automaton.allowed([1])
    assert after_no is not None and list(after_no.ids) == [3]  # "t", never "w" (of "now")
    walked = [1, 3, 4, 5, 6]
    end = automaton.allowed(walked)
    assert end is not None and 0 in end.ids
    # the span "now" is still reachable through its own first token
    after_now = automaton.allowed([9])
    assert after_now is not None and 0 in after_now.ids
    # a bare space begins every span (Gemma writes " 1988" as " ", "1", ...): it commits to nothing
    spaced = SpanAutomaton(["it is now"], table_from_pieces([*pieces, b" "]), [0])
    after_space = spaced.allowed([10])
    assert after_space is not None and {1, 7} <= set(after_space.ids)  # "no" and "it"


@pytest.mark.parametrize("bias", [float("inf"), float("nan"), 1e39, -101.0])
def test_an_abstention_bias_out_of_range_is_refused_in_one_line(
    bias: float, tiny_generator: Generator
) -> None:
    with pytest.raises(DecodingError, match="--abstain-bias must be a number from -100 to 100"):
        GenerateStep(tiny_generator, decoding="grounded", abstain_bias=bias)
