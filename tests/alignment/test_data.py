"""Readers, the HH prompt split, the data report and the deterministic train/validation split."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import (
    DataFormatError,
    Demonstration,
    PreferencePair,
    demonstrations_from_dataset,
    demonstrations_from_pairs,
    pairs_from_dataset,
    read_demonstrations_jsonl,
    read_hh_jsonl,
    read_preference_jsonl,
    split_hh_pair,
    train_validation_split,
)
from alignment.hh import HHFormatError


def test_hh_split_takes_prompt_up_to_last_assistant_marker() -> None:
    shared = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I bake bread?\n\nAssistant:"
    prompt, chosen, rejected = split_hh_pair(shared + " Use flour.", shared + " No idea.")
    assert prompt == shared
    assert (chosen, rejected) == (" Use flour.", " No idea.")


def test_hh_split_rejects_dialogues_that_differ_before_the_last_turn() -> None:
    with pytest.raises(HHFormatError) as info:
        split_hh_pair("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: b\n\nAssistant: y")
    assert info.value.reason == "prompt_mismatch"
    with pytest.raises(HHFormatError) as info:
        split_hh_pair("no dialogue here", "\n\nHuman: b\n\nAssistant: y")
    assert info.value.reason == "no_assistant_turn"


def test_read_hh_counts_bad_lines_by_reason(tmp_path: Path) -> None:
    good = {"chosen": "\n\nHuman: q\n\nAssistant: yes", "rejected": "\n\nHuman: q\n\nAssistant: no"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(
            {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}
        ),
        json.dumps({"chosen": "x"}),
        json.dumps({"chosen": 3, "rejected": "y"}),
        "",
        json.dumps([1, 2]),
    ]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    loaded = read_hh_jsonl(path)
    assert [p.prompt for p in loaded.records] == ["\n\nHuman: q\n\nAssistant:"]
    assert loaded.records[0].metadata["source"] == "line 1"
    report = loaded.report
    assert (report.total, report.kept) == (6, 1)
    assert report.dropped == {
        "malformed_json": 2,
        "prompt_mismatch": 1,
        "missing_field": 1,
        "wrong_type": 1,
    }
    assert report.examples["malformed_json"] == ["line 2", "line 7"]
    assert "prompt_mismatch 1 (line 3)" in report.summary()


def test_jsonl_reader_uses_configured_field_names_and_limit(tmp_path: Path) -> None:
    rows = [{"q": f"p{i}", "good": f"c{i}", "bad": f"r{i}", "id": i} for i in range(5)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    loaded = read_preference_jsonl(
        path,
        prompt_field="q",
        chosen_field="good",
        rejected_field="bad",
        metadata_fields=["id"],
        limit=3,
    )
    assert [(p.prompt, p.chosen, p.rejected) for p in loaded.records] == [
        ("p0", "c0", "r0"),
        ("p1", "c1", "r1"),
        ("p2", "c2", "r2"),
    ]
    assert loaded.records[2].metadata == {"source": "line 3", "id": 2}
    assert loaded.report.total == 3


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="data file not found"):
        read_hh_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataFormatError, match="is a folder, not a JSONL file"):
        read_hh_jsonl(tmp_path)


def test_pairs_from_a_datasets_dataset() -> None:
    from datasets import Dataset

    ds = Dataset.from_dict(
        {
            "chosen": ["\n\nHuman: q\n\nAssistant: yes", "bad"],
            "rejected": ["\n\nHuman: q\n\nAssistant: no", "\n\nHuman: q\n\nAssistant: no"],
        }
    )
    loaded = pairs_from_dataset(ds, format="hh")
    assert [(p.chosen, p.rejected) for p in loaded.records] == [(" yes", " no")]
    assert loaded.report.dropped == {"no_assistant_turn": 1}
    assert loaded.report.examples["no_assistant_turn"] == ["row 1"]
    with pytest.raises(DataFormatError, match="no column 'prompt'"):
        pairs_from_dataset(ds, format="fields")


def test_demonstrations_from_jsonl_plain_and_chat(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p", "response": "r"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "assistant", "content": "yo"}, {"role": "user", "content": "hi"}]},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"prompt": "only a prompt"},
    ]
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    loaded = read_demonstrations_jsonl(path)
    assert len(loaded.records) == 2
    assert loaded.records[1].messages is not None
    assert loaded.report.dropped == {"bad_messages": 2, "missing_field": 1}


def test_demonstration_needs_exactly_one_form() -> None:
    with pytest.raises(ValueError):
        Demonstration(prompt="p")
    with pytest.raises(ValueError):
        Demonstration(prompt="p", response="r", messages=({"role": "assistant", "content": "x"},))  # type: ignore[arg-type]


def test_demonstrations_from_pairs_and_dataset() -> None:
    from datasets import Dataset

    pairs = [PreferencePair(prompt="p", chosen="c", rejected="r")]
    assert demonstrations_from_pairs(pairs)[0].response == "c"
    ds = Dataset.from_dict({"prompt": ["a", "b"], "response": ["x", "y"]})
    assert [d.response for d in demonstrations_from_dataset(ds).records] == ["x", "y"]


def _pairs(prompts: list[str]) -> list[PreferencePair]:
    return [
        PreferencePair(prompt=p, chosen=f"c{i}", rejected=f"r{i}") for i, p in enumerate(prompts)
    ]


def test_split_is_deterministic_and_seed_dependent() -> None:
    pairs = _pairs([f"prompt {i}" for i in range(200)])
    a = train_validation_split(pairs, validation_fraction=0.1, seed=7)
    b = train_validation_split(pairs, validation_fraction=0.1, seed=7)
    c = train_validation_split(pairs, validation_fraction=0.1, seed=8)
    assert a.validation == b.validation and a.train == b.train
    assert a.validation != c.validation
    assert len(a.validation) == 20 and len(a.train) == 180
    # original order is kept inside each part
    assert [p.chosen for p in a.train] == sorted(
        (p.chosen for p in a.train), key=lambda s: int(s[1:])
    )


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 15), min_size=2, max_size=60),
    fraction=st.floats(0.05, 0.9),
    seed=st.integers(0, 10),
)
def test_split_never_puts_one_prompt_on_both_sides(
    keys: list[int], fraction: float, seed: int
) -> None:
    pairs = _pairs([f"prompt {k}" for k in keys])
    split = train_validation_split(pairs, validation_fraction=fraction, seed=seed)
    train_prompts = {p.prompt for p in split.train}
    val_prompts = {p.prompt for p in split.validation}
    assert not train_prompts & val_prompts
    assert len(split.train) + len(split.validation) == len(pairs)
    if len(set(keys)) >= 2:
        assert split.train and split.validation


def test_split_fraction_zero_keeps_everything_for_training() -> None:
    pairs = _pairs(["a", "b"])
    split = train_validation_split(pairs, validation_fraction=0.0)
    assert split.train == pairs and split.validation == []
    with pytest.raises(ValueError):
        train_validation_split(pairs, validation_fraction=1.0)
