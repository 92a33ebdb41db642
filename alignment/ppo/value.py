"""Value functions: a separate model initialised from the reward model, or a head on the policy.

The separate model (backbone + scalar head copied from the reward model) is the InstructGPT /
N+ default: the critic starts out already knowing what the reward model likes. The alternative
is a zero-initialised ``Linear(d_model, 1)`` on the policy's last hidden state, which costs no
extra forward pass; zero init makes the first values 0, so the first advantages are just the
returns.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from alignment.backbone import disable_dropout, merged_copy
from alignment.collate import positions_from_mask
from alignment.reward_model import RewardModel


class ValueModel(nn.Module):
    """A transformer backbone (base model, no LM head) and a scalar head read at every token."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        disable_dropout(self.backbone)

    @classmethod
    def from_reward_model(cls, reward_model: RewardModel) -> ValueModel:
        """An independent copy of the reward model's backbone (LoRA merged) and head."""
        backbone = merged_copy(reward_model.backbone)
        if backbone is reward_model.backbone:
            backbone = copy.deepcopy(backbone)
        model = cls(backbone, copy.deepcopy(reward_model.head))
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int
    ) -> torch.Tensor:
        """Values ``[batch, response_length]`` at the positions that predict each response token."""
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions_from_mask(attention_mask),
            use_cache=False,
        )
        hidden = out.last_hidden_state[:, -response_length - 1 : -1]
        values: torch.Tensor = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)
        return values.float()


def zero_value_head(hidden_size: int) -> nn.Linear:
    """``Linear(hidden_size, 1)`` with zero weight and bias."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head
