"""Answer parsers, chain-of-thought and self-consistency control flow (scripted generator)."""

from __future__ import annotations

import pytest

from prompts import (
    ChainOfThought,
    ChoiceParser,
    Example,
    JsonFieldParser,
    LastNumberParser,
    MarkerParser,
    SelfConsistency,
    normalize_answer,
)


def test_marker_parser_takes_the_last_answer_line() -> None:
    text = "First I guess. Answer: wrong\nThen I check.\nAnswer: Paris\nThanks."
    found = MarkerParser().extract(text)
    assert found is not None and found.answer == "Paris"
    assert text[: found.start].endswith("Then I check.\n")
    assert MarkerParser().extract("no marker here") is None
    assert MarkerParser(marker="Final:").extract("x\nfinal: 7").answer == "7"  # type: ignore[union-attr]


def test_number_choice_and_json_parsers() -> None:
    assert LastNumberParser().extract("3 apples + 1,200 pears = 1,203.5 fruit").answer == "1203.5"  # type: ignore[union-attr]
    assert LastNumberParser().extract("-4 degrees").answer == "-4"  # type: ignore[union-attr]
    assert LastNumberParser().extract("none") is None
    assert ChoiceParser().extract("A cat sat. So the answer is (c).").answer == "C"  # type: ignore[union-attr]
    assert ChoiceParser().extract("I pick (B) here").answer == "B"  # type: ignore[union-attr]
    assert ChoiceParser(choices="AB").extract("nothing") is None
    text = 'think... ```json\n{"answer": "Rhine", "why": 1}\n```'
    assert JsonFieldParser().extract(text).answer == "Rhine"  # type: ignore[union-attr]
    assert JsonFieldParser(field="n").extract('{"n": 3}').answer == "3"  # type: ignore[union-attr]
    assert JsonFieldParser().extract('{"other": 1}') is None


def test_normalize_answer_merges_surface_forms() -> None:
    assert normalize_answer("The Eiffel Tower.") == normalize_answer("eiffel  tower")
    assert normalize_answer("1,000") == normalize_answer("1000") == "1000"
    assert normalize_answer("4.0") == "4"
    assert normalize_answer("2.5 kg") == "2.5 kg"


def test_zero_shot_cot_adds_the_instruction_and_keeps_reasoning(scripted: type) -> None:
    gen = scripted(["Paris is in France. Its capital is Paris.\nAnswer: Paris"])
    result = ChainOfThought(gen, options={"max_new_tokens": 64}).run(
        "What is the capital of France?"
    )
    assert result.text == result.answer == "Paris"
    assert result.parsed
    assert result.reasoning == "Paris is in France. Its capital is Paris."
    sent = gen.prompts[0]
    assert "Let's think step by step." in sent and "'Answer:'" in sent
    assert gen.calls[0][1] == {"max_new_tokens": 64}


def test_unparsed_cot_falls_back_to_the_last_line(scripted: type) -> None:
    result = ChainOfThought(scripted(["hmm\nmaybe Lyon"])).run("q")
    assert not result.parsed and result.text == "maybe Lyon"


def test_few_shot_cot_shows_rationales_in_the_parser_format(scripted: type) -> None:
    examples = [Example(input="2 + 3 * 2?", output="8", rationale="3 * 2 = 6 and 2 + 6 = 8.")]
    gen = scripted(["4 * 2 = 8, 8 + 1 = 9. Answer: 9"])
    cot = ChainOfThought(gen, examples=examples)
    chat = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "1 + 4 * 2?"}]
    result = cot.run(chat)
    assert result.text == "9"
    sent = gen.calls[0][0][0]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == "3 * 2 = 6 and 2 + 6 = 8.\nAnswer: 8"
    assert sent[3]["content"].startswith("1 + 4 * 2?")
    with pytest.raises(ValueError, match="rationale"):
        ChainOfThought(gen, examples=[Example(input="x", output="y")]).prepare("q")


def test_cot_run_batch_is_one_generator_call(scripted: type) -> None:
    gen = scripted(lambda prompt, _: "Answer: " + prompt.split("?")[0][-1])
    results = ChainOfThought(gen).run_batch([{"prompt": "a?"}, {"prompt": "b?"}])
    assert [r.text for r in results] == ["a", "b"]
    assert len(gen.calls) == 1


def test_self_consistency_votes_in_one_batched_sampling_call(scripted: type) -> None:
    replies = [
        "r1\nAnswer: The Seine.",
        "r2\nAnswer: Rhine",
        "r3\nAnswer: seine",
        "r4 no answer",
        "r5\nAnswer: Seine",
    ]
    gen = scripted(list(replies))
    voted = SelfConsistency(gen, n=5, temperature=0.8, seed=3).run("Which river?")
    assert len(gen.calls) == 1
    prompts, options = gen.calls[0]
    assert len(prompts) == 5 and len(set(prompts)) == 1
    assert options == {"do_sample": True, "temperature": 0.8, "seed": 3}
    assert voted.votes == {"seine": 3, "rhine": 1}
    assert voted.confidence == pytest.approx(3 / 5)
    assert voted.distribution == {"seine": 0.6, "rhine": 0.2}
    assert voted.text == "The Seine."  # first of the tied surface forms of the winner
    assert [s.parsed for s in voted.samples] == [True, True, True, False, True]
    assert voted.samples[0].reasoning == "r1"
    assert len(voted.calls.calls) == 5
    assert voted.prompt_tokens == 50 and voted.completion_tokens == 25


def test_self_consistency_tie_goes_to_the_first_answer_seen(scripted: type) -> None:
    voted = SelfConsistency(
        scripted(["Answer: B", "Answer: A", "Answer: A", "Answer: B"]), n=4
    ).run("q")
    assert voted.text == "B" and voted.confidence == 0.5


def test_self_consistency_falls_back_when_nothing_parses(scripted: type) -> None:
    voted = SelfConsistency(scripted(["x\n7", "y\n7", "z\n8"]), n=3).run("q")
    assert voted.text == "7" and voted.notes
    assert voted.confidence == pytest.approx(2 / 3)


def test_self_consistency_rejects_greedy_settings(scripted: type) -> None:
    with pytest.raises(ValueError):
        SelfConsistency(scripted([]), temperature=0)
    with pytest.raises(ValueError):
        SelfConsistency(scripted([]), n=0)
