"""PPO-ptx: the demonstration batches whose language-model loss is mixed into the PPO loss.

InstructGPT adds ``γ · log π(x)`` on pretraining text to the PPO objective so that the policy
does not regress on what it already did well. Here the text is a set of demonstrations (the SFT
data, tokenised and collated exactly as SFT does: loss on response tokens only), served in a
fixed cyclic order: batch ``k`` is a pure function of ``k`` (an epoch-wise shuffle seeded from
``(seed, epoch)``, wrapping into the next epoch), so a checkpoint only has to remember how many
batches were drawn for a resumed run to see the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from alignment.collate import Batch, collate_demonstrations
from alignment.tokenization import TokenizedDemonstration


class PtxData:
    """Tokenised demonstrations served ``batch_size`` at a time, cycling through epochs."""

    def __init__(
        self,
        demonstrations: Sequence[TokenizedDemonstration],
        pad_token_id: int,
        batch_size: int,
        seed: int = 0,
    ) -> None:
        if not demonstrations:
            raise ValueError("PPO-ptx needs at least one demonstration")
        if batch_size < 1:
            raise ValueError(f"ptx batch_size must be at least 1, got {batch_size}")
        self.demonstrations = list(demonstrations)
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.demonstrations)

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.demonstrations)))
            random.Random(f"ptx-{self.seed}-{epoch}").shuffle(order)
            self._orders = {epoch: order}  # batches are drawn in order: one epoch cached is enough
        return self._orders[epoch]

    def indices(self, index: int) -> list[int]:
        """Demonstration indices of batch ``index`` (0-based)."""
        if index < 0:
            raise ValueError(f"batch index must be non-negative, got {index}")
        n = len(self.demonstrations)
        out = []
        for k in range(index * self.batch_size, (index + 1) * self.batch_size):
            epoch, position = divmod(k, n)
            out.append(self._order(epoch)[position])
        return out

    def batch(self, index: int) -> Batch:
        """Batch ``index``, right-padded, labels on response tokens only (SFT's collation)."""
        return collate_demonstrations(
            [self.demonstrations[i] for i in self.indices(index)], self.pad_token_id
        )


def split_rows(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` cut into ``parts`` consecutive row groups (one per accumulation micro-batch)."""
    if batch.size % parts:
        raise ValueError(f"a ptx batch of {batch.size} rows does not split into {parts} parts")
    step = batch.size // parts
    out = []
    for start in range(0, batch.size, step):
        rows = slice(start, start + step)
        out.append(
            Batch(
                batch.input_ids[rows],
                batch.attention_mask[rows],
                batch.position_ids[rows],
                None if batch.labels is None else batch.labels[rows],
            )
        )
    return out
