"""The trainable parts of PPO as one module with one forward pass.

Why one module: under ``accelerate launch`` (DDP, DeepSpeed) gradients are synchronised by the
wrapper around the module whose ``forward`` was called, and a wrapper expects one forward per
backward. Putting the policy, the value function and the PPO-ptx language-model loss behind a
single ``forward`` gives exactly that, and makes the same code a no-op wrapper on one CPU. The
submodule names (``policy``, ``value``, ``value_head``) are the names in PPO checkpoints.

``part`` runs the policy or a separate value model alone: the trainer then back-propagates one
before running the other, so only one backbone's activations are alive at a time (where the
wrapper does not synchronise that backward; see ``PPOTrainer._split_models``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from alignment.collate import Batch
from alignment.ppo.constrained import constrained
from alignment.ppo.logprobs import response_forward, selected_logprobs
from alignment.ppo.value import ValueModel
from alignment.sft import ResponseOnlyLM

Part = Literal["both", "policy", "value"]


@dataclass
class PolicyValueOutput:
    """Log-probs and values of the response tokens, T-scaled logits, and the ptx loss sum.

    ``ptx_loss_sum`` / ``ptx_tokens``: summed negative log-likelihood of the demonstration
    response tokens and their count (``None`` when no demonstration batch was given). A
    forward of one ``part`` leaves the other part's fields ``None``.
    """

    logprobs: torch.Tensor | None
    values: torch.Tensor | None
    logits: torch.Tensor | None
    ptx_loss_sum: torch.Tensor | None = None
    ptx_tokens: torch.Tensor | None = None


class PolicyAndValue(nn.Module):
    """Policy + value function (a separate :class:`ValueModel` or a head on the policy)."""

    def __init__(
        self,
        policy: nn.Module,
        value_model: ValueModel | None = None,
        value_head: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        if (value_model is None) == (value_head is None):
            raise ValueError("give exactly one of value_model and value_head")
        self.policy = policy
        self.value = value_model
        self.value_head = value_head

    @property
    def separable(self) -> bool:
        """Whether policy and value can run as separate forward/backward passes (their weights
        are disjoint: a separate value model, not a head on the policy's hidden state)."""
        return self.value is not None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_ids: torch.Tensor,
        temperature: float,
        ptx: Batch | None = None,
        part: Part = "both",
        logit_offsets: torch.Tensor | None = None,
    ) -> PolicyValueOutput:
        """Score ``response_ids`` (the last columns of ``input_ids``) and, optionally, ``ptx``.

        ``part`` = ``"policy"`` (log-probs, logits, ptx) or ``"value"`` (values) runs one model
        only, so that its activations can be freed by its own backward before the other model
        runs (with a separate value model only). The ptx loss is the plain language-model loss
        (temperature 1: it is the model's own likelihood of the demonstrations, not the
        sampling distribution). ``logit_offsets``: the rollout's token constraint
        (:mod:`.constrained`), added to the T-scaled logits before anything is read from them.
        """
        width = response_ids.shape[1]
        if part != "both" and not self.separable:
            raise ValueError("a value head shares the policy's forward pass: use part='both'")
        if part == "value":
            assert self.value is not None
            alone = self.value(input_ids, attention_mask, width)
            return PolicyValueOutput(None, alone.float(), None)
        out = response_forward(
            self.policy,
            input_ids,
            attention_mask,
            width,
            temperature,
            want_hidden=self.value_head is not None,
        )
        logits = constrained(out.logits, logit_offsets)
        logprobs = selected_logprobs(logits, response_ids)
        values: torch.Tensor | None = None
        if self.value_head is not None:
            assert out.hidden is not None
            values = self.value_head(out.hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        elif part == "both":
            assert self.value is not None
            values = self.value(input_ids, attention_mask, width)
        result = PolicyValueOutput(logprobs, None if values is None else values.float(), logits)
        if ptx is not None:
            assert ptx.labels is not None
            result.ptx_loss_sum, result.ptx_tokens = ResponseOnlyLM(self.policy)(
                ptx.input_ids, ptx.attention_mask, ptx.position_ids, ptx.labels
            )
        return result
