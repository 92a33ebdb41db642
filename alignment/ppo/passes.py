"""Forward passes sized by padded tokens, not rows: the padding of a rollout batch is not computed.

A rollout batch is left-padded to its longest prompt. HH prompts range from 16 to 192 tokens, so
a batch of 8 is typically 40–80 % real tokens, and every PPO epoch would run the policy and value
backbones forward and backward over the padding too. Splitting a micro-batch into passes of
rows of similar length, each trimmed of the columns that are padding in all its rows, removes
that work exactly: the losses are token sums over the minibatch's token count (see
:mod:`alignment.ppo.losses`), so the gradients of the passes add up to the gradient of the
micro-batch, and a left-padding column that every row masks changes no real position.

The budget is in padded tokens per pass (``rows × longest row``), as in veRL's dynamic batch
size: smaller passes waste less on padding and hold fewer activations; larger ones keep a GPU
busy. Rows keep their response columns (the response is always the last ``response_length``
columns), so only prompt padding is trimmed.
"""

from __future__ import annotations

import torch


def plan_passes(
    rows: torch.Tensor, lengths: torch.Tensor, budget: int | None
) -> list[torch.Tensor]:
    """Split ``rows`` (indices) into passes of at most ``budget`` padded tokens.

    ``lengths[i]`` is the padded width row ``rows[i]`` needs. Rows are taken longest first and a
    pass grows while ``rows × longest ≤ budget``; a row longer than the budget gets a pass of
    its own. ``budget=None`` keeps every row in one pass. The plan depends only on the lengths,
    so it is the same on every run (the order of rows inside a pass does not change the result).
    """
    if budget is None or rows.numel() <= 1:
        return [rows]
    order = torch.argsort(lengths, descending=True, stable=True)
    passes: list[torch.Tensor] = []
    start = 0
    total = rows.numel()
    while start < total:
        longest = int(lengths[order[start]])
        end = start + 1
        while end < total and (end - start + 1) * longest <= budget:
            end += 1
        passes.append(rows[order[start:end]])
        start = end
    return passes


def trim_left_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding in every row (position ids come from the mask,
    so they are unchanged)."""
    real = attention_mask.bool().any(dim=0)
    if not bool(real.any()):
        return input_ids, attention_mask
    first = int(real.nonzero()[0])
    return input_ids[:, first:], attention_mask[:, first:]


def padded_widths(query_mask: torch.Tensor, response_width: int) -> torch.Tensor:
    """Columns each row needs once its own left padding is trimmed: real prompt + response."""
    return query_mask.sum(dim=1) + response_width
