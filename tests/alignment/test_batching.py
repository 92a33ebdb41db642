"""Padding, positions and batch planning (pairs of one prompt together, reproducible order)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import group_batches, pad_examples
from alignment.batching import shard
from alignment.tokenization import EncodedExample


def test_left_and_right_padding_with_positions_from_the_first_real_token() -> None:
    examples = [EncodedExample((5, 6, 7), 1), EncodedExample((8,), 0)]
    right = pad_examples(examples, pad_token_id=1, side="right")
    left = pad_examples(examples, pad_token_id=1, side="left")
    assert right.input_ids.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert left.input_ids.tolist() == [[5, 6, 7], [1, 1, 8]]
    assert right.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert left.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert right.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert left.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    labelled = pad_examples(examples, pad_token_id=1, side="left", with_labels=True)
    assert labelled.labels is not None
    assert labelled.labels.tolist() == [[-100, 6, 7], [-100, -100, 8]]
    assert right.labels is None


@settings(max_examples=80, deadline=None)
@given(
    keys=st.lists(st.integers(0, 12), min_size=1, max_size=80),
    batch_size=st.integers(1, 9),
    seed=st.integers(0, 5),
    by_length=st.booleans(),
)
def test_every_pair_of_a_prompt_lands_in_one_batch(
    keys: list[int], batch_size: int, seed: int, by_length: bool
) -> None:
    names = [f"p{k}" for k in keys]
    lengths = [(7 * i) % 13 for i in range(len(keys))] if by_length else None
    batches = group_batches(names, batch_size, seed=seed, epoch=1, lengths=lengths)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(keys)))  # every record exactly once
    home = {}
    for number, batch in enumerate(batches):
        for i in batch:
            assert home.setdefault(names[i], number) == number  # a prompt never spans batches
        group_sizes = {names[i] for i in batch}
        if len(batch) > batch_size:  # only a single oversized group may exceed the size
            assert len(group_sizes) == 1


def test_batch_order_depends_only_on_seed_and_epoch() -> None:
    keys = [f"p{i}" for i in range(50)]
    assert group_batches(keys, 4, seed=3, epoch=2) == group_batches(keys, 4, seed=3, epoch=2)
    assert group_batches(keys, 4, seed=3, epoch=2) != group_batches(keys, 4, seed=3, epoch=3)
    assert group_batches(keys, 4, shuffle=False) == [
        list(range(i, min(i + 4, 50))) for i in range(0, 50, 4)
    ]


def test_length_grouping_reduces_padding() -> None:
    lengths = [(37 * i) % 97 + 3 for i in range(256)]
    keys = [str(i) for i in range(256)]

    def waste(batches: list[list[int]]) -> int:
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches
        )

    assert waste(group_batches(keys, 8, lengths=lengths)) < waste(group_batches(keys, 8)) / 4


def test_shard_gives_each_process_an_equal_disjoint_share() -> None:
    batches = [[i] for i in range(7)]
    shards = [shard(batches, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    assert sorted(b[0] for s in shards for b in s) == [0, 1, 2, 3, 4, 5]
    assert shard(batches, 0, 1) == batches
