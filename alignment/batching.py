"""Which records go into which batch, reproducibly.

* All pairs that share a prompt go into one batch (the InstructGPT recipe: comparisons of one
  prompt are correlated, and splitting them across steps overfits).
* The order depends only on ``(seed, epoch)``, so a resumed run sees the batches an
  uninterrupted run would have seen.
* Optionally, records of similar length are batched together (within a shuffled window) to cut
  padding, which is most of the waste on CPU.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

LENGTH_WINDOW_BATCHES = 32


def group_batches(
    keys: Sequence[str],
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    lengths: Sequence[int] | None = None,
) -> list[list[int]]:
    """Indices of records packed into batches of at most ``batch_size``, never splitting a group.

    A group larger than ``batch_size`` becomes one (larger) batch of its own. With ``lengths``
    the groups inside each window of ``LENGTH_WINDOW_BATCHES`` batches are sorted by length
    before packing, and the resulting batches are shuffled again.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    ordered = list(groups.values())
    rng = random.Random(seed * 1_000_003 + epoch)
    if shuffle:
        rng.shuffle(ordered)
    if lengths is not None:
        window = batch_size * LENGTH_WINDOW_BATCHES
        sorted_groups: list[list[int]] = []
        chunk: list[list[int]] = []
        count = 0
        for group in [*ordered, None]:
            if group is None or count >= window:
                chunk.sort(key=lambda g: max(lengths[i] for i in g))
                sorted_groups.extend(chunk)
                chunk, count = [], 0
            if group is not None:
                chunk.append(group)
                count += len(group)
        ordered = sorted_groups
    batches: list[list[int]] = []
    current: list[int] = []
    for group in ordered:
        if current and len(current) + len(group) > batch_size:
            batches.append(current)
            current = []
        current = current + group
    if current:
        batches.append(current)
    if shuffle and lengths is not None:
        rng.shuffle(batches)
    return batches


def shard(batches: Sequence[T], process_index: int, num_processes: int) -> list[T]:
    """This process's share of ``batches`` for data-parallel training.

    Every process gets the same number of batches (the remainder is dropped) so that gradient
    synchronisation never waits on a process that has run out of data.
    """
    if num_processes <= 1:
        return list(batches)
    usable = len(batches) - len(batches) % num_processes
    return list(batches[process_index:usable:num_processes])
