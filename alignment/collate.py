"""Padding token sequences into tensors, for pairs and for demonstrations.

Positions are counted from the first real token (``position_ids = cumsum(mask) - 1``), so a
left-padded and a right-padded copy of the same sequence give the same hidden states; the
checklist asks for this because left padding is what generation (PPO) uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from alignment.tokenization import EncodedExample, TokenizedDemonstration, TokenizedPair

PaddingSide = Literal["left", "right"]
IGNORE_INDEX = -100


@dataclass
class Batch:
    """Padded model inputs; ``labels`` only for language-model (SFT) batches."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """A copy on ``device``."""
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            None if self.labels is None else self.labels.to(device),
        )

    @property
    def size(self) -> int:
        """Number of sequences."""
        return int(self.input_ids.shape[0])


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on the first real token whatever the padding side."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pad_examples(
    examples: Sequence[EncodedExample],
    pad_token_id: int,
    side: PaddingSide = "right",
    with_labels: bool = False,
) -> Batch:
    """Pad ``examples`` to the longest; labels (if asked) are the response ids, else -100."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        start = width - n if side == "left" else 0
        seq = torch.tensor(example.input_ids, dtype=torch.long)
        ids[row, start : start + n] = seq
        mask[row, start : start + n] = 1
        r0 = start + example.response_start
        labels[row, r0 : start + n] = seq[example.response_start :]
    return Batch(ids, mask, positions_from_mask(mask), labels if with_labels else None)


def collate_pairs(
    pairs: Sequence[TokenizedPair], pad_token_id: int, side: PaddingSide = "right"
) -> Batch:
    """One batch of ``2 × len(pairs)`` rows: all chosen sequences first, then all rejected.

    Chosen and rejected go through the model in one forward pass, so they are padded alike.
    """
    examples = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return pad_examples(examples, pad_token_id, side)


def collate_demonstrations(
    demos: Sequence[TokenizedDemonstration], pad_token_id: int, side: PaddingSide = "right"
) -> Batch:
    """A language-model batch whose labels cover response tokens only (-100 elsewhere)."""
    return pad_examples([d.example for d in demos], pad_token_id, side, with_labels=True)
