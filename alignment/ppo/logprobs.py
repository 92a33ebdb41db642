"""Log-probabilities of sampled tokens without extra vocabulary-sized tensors.

On CPU the vocabulary-wide tensors dominate a PPO step (the notes measured a 2-layer model with
a 49k vocabulary spending most of its time there). Three savings, all exact:

* only the positions that predict response tokens go through the LM head (the prompt's logits
  are never computed);
* the temperature divides the *hidden state* (size ``d_model``) before the LM head instead of
  the logits (size ``vocab``), which is the same linear map;
* :class:`SelectedLogProb` returns ``logit[token] − logsumexp(logits)`` and its backward builds
  the gradient ``onehot − softmax`` in a single vocabulary-sized buffer, where the autograd of
  ``log_softmax(...).gather(...)`` keeps a log-softmax copy and a scatter buffer.

Models whose head is not a plain ``Linear`` (a LoRA-wrapped head, logit soft-capping or scaling)
take a fallback path through the model's own forward with ``logits_to_keep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from alignment.collate import positions_from_mask

_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class SelectedLogProb(torch.autograd.Function):
    """``log_softmax(logits)[token]`` with a memory-lean backward (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, tokens, lse)
        return picked - lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, tokens, lse = ctx.saved_tensors
        g = grad.unsqueeze(-1).to(logits.dtype)
        out = (logits - lse.unsqueeze(-1)).exp_().mul_(-g)
        out.scatter_add_(-1, tokens.unsqueeze(-1), g)
        return out, None


def selected_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (float32) of ``tokens`` under ``logits`` (already divided by T)."""
    if logits.dtype != torch.float32:
        logits = logits.float()  # log-prob ratios in bf16 are too coarse for PPO's clip
    out: torch.Tensor = SelectedLogProb.apply(logits, tokens)
    return out


@torch.no_grad()
def entropy_from_logits(logits: torch.Tensor, chunk_tokens: int = 256) -> torch.Tensor:
    """Per-token entropy ``logsumexp(z) − Σ softmax(z)·z``, a few tokens at a time (no grad)."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    step = max(1, chunk_tokens)
    for start in range(0, flat.shape[0], step):
        z = flat[start : start + step].float()
        lse = torch.logsumexp(z, dim=-1)
        out[start : start + step] = lse - (torch.softmax(z, dim=-1) * z).sum(-1)
    return out.view(logits.shape[:-1])


@dataclass
class ResponseForward:
    """Temperature-scaled logits predicting each response token, and the hidden states there."""

    logits: torch.Tensor
    hidden: torch.Tensor | None


def _fused_parts(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """The decoder and a plain Linear LM head, when the head can be applied by hand exactly."""
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    try:
        decoder, head = get_decoder(), get_head()
    except (AttributeError, ValueError, NotImplementedError):
        return None
    if not isinstance(head, nn.Linear) or type(head) is not nn.Linear or decoder is model:
        return None
    return decoder, head


def response_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_length: int,
    temperature: float,
    *,
    want_hidden: bool = False,
) -> ResponseForward:
    """Forward ``prompt + response`` and keep only the ``response_length`` predicting positions.

    Inputs are left-padded prompts followed by right-padded responses, so the response always
    occupies the last ``response_length`` columns and the positions that predict it are the
    ``response_length`` columns before the last one. ``position_ids = cumsum(mask) − 1``.
    """
    position_ids = positions_from_mask(attention_mask)
    parts = _fused_parts(model)
    if parts is not None:
        decoder, head = parts
        out = decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        hidden = out.last_hidden_state[:, -response_length - 1 : -1]
        bias = None if head.bias is None else head.bias / temperature
        logits = functional.linear(hidden / temperature, head.weight, bias)
        return ResponseForward(logits, hidden)
    if want_hidden:
        raise ValueError(
            "a value head on the policy needs a model with get_decoder() and a plain Linear "
            "LM head; use a separate value model instead"
        )
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=response_length + 1,
    )
    return ResponseForward(out.logits[:, :-1] / temperature, None)
