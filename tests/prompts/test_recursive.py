"""Least-to-most, self-refine and recursive summaries: order, stopping, limits, call trees."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from prompts import (
    LeastToMost,
    RecursiveSummary,
    SelfRefine,
    parse_subquestions,
    split_to_fit,
    whitespace_tokens,
)


def test_parse_subquestions() -> None:
    text = "Sub-questions:\n1. How old is Ann?\n2) How old is Bob?\n- Who is older?\n1. How old is Ann?"
    assert parse_subquestions(text, 5) == ["How old is Ann?", "How old is Bob?", "Who is older?"]
    assert parse_subquestions(text, 2) == ["How old is Ann?", "How old is Bob?"]
    assert parse_subquestions("Is it? yes\nWhat now?", 5) == ["What now?"]


def least_to_most_script(prompt: str, _: dict) -> str:
    if "Break the question" in prompt:
        return "1. How old is Ann?\n2. How old is Bob?\n3. Who is older?"
    last_q = prompt.rsplit("Q: ", 1)[1].split("\n")[0]
    return {"How old is Ann?": "10", "How old is Bob?": "12", "Who is older?": "Bob"}.get(
        last_q, "Bob, by two years"
    )


def test_least_to_most_answers_in_order_with_previous_answers(scripted: type) -> None:
    gen = scripted(least_to_most_script)
    result = LeastToMost(gen).run("Is Ann or Bob older?", context="Ann is 10. Bob is 12.")
    assert [s.question for s in result.steps] == [
        "How old is Ann?",
        "How old is Bob?",
        "Who is older?",
    ]
    assert [s.answer for s in result.steps] == ["10", "12", "Bob"]
    assert result.text == "Bob, by two years"
    assert result.stopped == "complete"
    prompts = gen.prompts
    assert len(prompts) == 5 and "Break the question" in prompts[0]
    assert "Q: How old is Ann?\nA: 10" not in prompts[1]
    assert "Q: How old is Ann?\nA: 10" in prompts[2]
    assert "Q: How old is Bob?\nA: 12" in prompts[3]
    assert prompts[4].rstrip().endswith("Q: Is Ann or Bob older?\nA:")
    assert all("Ann is 10. Bob is 12." in p for p in prompts)
    kinds = [n.kind for n in result.calls.calls]
    assert kinds == ["decompose", "answer", "answer", "answer", "compose"]
    assert result.calls.depth() == 2  # root -> subquestion stage -> answer call


def test_least_to_most_recursion_is_bounded_by_depth(scripted: type) -> None:
    # a model that always splits: depth bounds the tree, max_subquestions its fan-out
    gen = scripted(lambda p, _: "1. a?\n2. b?\n3. c?" if "Break the question" in p else "x")
    result = LeastToMost(gen, max_subquestions=2, max_depth=2).run("q?")
    kinds = [n.kind for n in result.calls.calls]
    assert kinds.count("decompose") == 1 + 2
    assert kinds.count("answer") == 4 and kinds.count("compose") == 3
    assert max(s.depth for s in result.steps) == 2
    direct = LeastToMost(scripted(["just this"]), max_depth=0).run("q?")
    assert direct.text == "just this" and direct.steps == []


def test_least_to_most_unsplit_question_is_answered_directly(scripted: type) -> None:
    gen = scripted(["1. What is 2 + 2?", "4"])
    result = LeastToMost(gen).run("What is 2 + 2?", passages=[{"n": 1, "text": "Maths."}])
    assert result.text == "4" and result.steps == []
    assert "[1] Maths." in gen.prompts[1]


def test_least_to_most_token_budget_stops_it(scripted: type) -> None:
    gen = scripted(least_to_most_script)  # each call costs 15 tokens
    result = LeastToMost(gen, max_tokens=40).run("Is Ann or Bob older?")
    assert result.stopped == "budget"
    assert len(gen.calls) == 3
    assert result.text == "12"  # the best answer so far: the last sub-answer


def test_self_refine_stops_when_the_critique_says_done(scripted: type) -> None:
    gen = scripted(["draft 1", "- too short", "draft 2", "DONE", "unused"])
    result = SelfRefine(gen, max_rounds=5).run("Write a haiku.")
    assert result.text == "draft 2"
    assert result.stopped == "done"
    assert [r.critique for r in result.rounds] == ["- too short", "DONE"]
    assert result.rounds[0].refined == "draft 2" and result.rounds[1].refined is None
    assert len(gen.calls) == 4
    assert "Draft:\ndraft 1" in gen.prompts[1] and "- too short" in gen.prompts[2]


def test_self_refine_round_limit_and_fixpoint(scripted: type) -> None:
    gen = scripted(lambda p, _: "fix it" if "Critique:" in p and "Improved" not in p else p[-7:])
    limited = SelfRefine(scripted(["d0", "c", "d1", "c", "d2", "c", "d3"]), max_rounds=2).run("t")
    assert limited.stopped == "max_rounds" and limited.text == "d2" and len(limited.rounds) == 2
    same = SelfRefine(scripted(["d0", "bad", "d0"]), max_rounds=5).run("t")
    assert same.stopped == "unchanged" and same.text == "d0"
    zero = SelfRefine(gen, max_rounds=0).run("t")
    assert zero.stopped == "max_rounds" and zero.rounds == []


def test_self_refine_budget(scripted: type) -> None:
    # each call costs 15 tokens: the budget is checked before a call, so 45 allows three
    gen = scripted(["d0", "c1", "d1", "c2", "d2"])
    result = SelfRefine(gen, max_rounds=9, max_tokens=45).run("t")
    assert result.stopped == "budget" and result.text == "d1" and len(gen.calls) == 3


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.sampled_from(["alpha", "beta.", "gamma", "delta!", "\n\n"]), max_size=80),
    limit=st.integers(min_value=2, max_value=12),
)
def test_split_to_fit_keeps_every_word_within_budget(words: list[str], limit: int) -> None:
    text = " ".join(words)
    chunks = split_to_fit(text, whitespace_tokens, limit)
    assert all(whitespace_tokens(c) <= limit for c in chunks)
    assert " ".join(chunks).split() == text.split()


def summary_script(prompt: str, _: dict) -> str:
    body = prompt.split("Text:\n", 1)[1].rsplit("\n\nSummary:", 1)[0]
    return " ".join(body.split()[:3])  # a "summary": the first three words


def test_recursive_summary_maps_per_level_in_one_batch(scripted: type) -> None:
    gen = scripted(summary_script)
    text = " ".join(f"w{i}" for i in range(200))
    result = RecursiveSummary(gen, whitespace_tokens, max_input_tokens=20).run(text)
    assert result.stopped == "fits"
    # 200 words -> 10 chunks -> 30 words -> 2 chunks -> 6 words, which fit one final call
    assert result.levels == [10, 2]
    assert [len(batch) for batch, _ in gen.calls] == [10, 2, 1]
    assert result.text == "w0 w1 w2"
    assert [n.kind for n in result.calls.children] == ["map", "map", "summarize"]


def test_recursive_summary_short_text_is_one_call(scripted: type) -> None:
    gen = scripted(summary_script)
    result = RecursiveSummary(gen, whitespace_tokens, max_input_tokens=50).run("a b c d e")
    assert result.levels == [] and len(gen.calls) == 1 and result.text == "a b c"


def test_recursive_summary_depth_limit_drops_and_notes(scripted: type) -> None:
    gen = scripted(summary_script)
    text = " ".join(f"w{i}" for i in range(200))
    result = RecursiveSummary(gen, whitespace_tokens, max_input_tokens=10, max_depth=1).run(text)
    assert result.stopped == "max_depth"
    assert result.levels == [20]
    assert any("dropped" in n for n in result.notes)
    assert whitespace_tokens(gen.prompts[-1]) < 60  # the final call fits


def test_recursive_summary_without_progress_stops(scripted: type) -> None:
    gen = scripted(lambda p, _: "the same long reply " * 5)
    text = " ".join(f"w{i}" for i in range(60))
    result = RecursiveSummary(gen, whitespace_tokens, max_input_tokens=20, max_depth=9).run(text)
    assert result.stopped == "no_progress" and result.levels == [3]
