"""The reward model: a transformer backbone and a scalar head read at the last real token.

Design (the checklist's reward-model items):

* the backbone is the base transformer of a causal LM (no vocabulary-sized LM head is
  computed); the head is ``Linear(d_model, 1)`` initialised with N(0, 1/√(d_model + 1)) and bias
  0, so initial scores are small and of the same scale whatever the width;
* the score is read at the last position whose attention mask is 1 (the EOS that ends the
  response, which the dedicated pad token keeps unmasked) and is the same under left and right
  padding (positions are counted from the first real token);
* after training a *normalisation bias* is added so that a reference set of responses scores 0
  on average; it is stored with the model and applied by :meth:`RewardModel.score`;
* dropout is off, so a score is a deterministic function of the text.

Saved as a folder: ``reward_model.json`` (format version, bias, lengths), ``head.safetensors``,
``backbone/`` (a Hugging Face model folder, safetensors, LoRA merged in) and the tokenizer files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.backbone import (
    disable_dropout,
    load_pretrained,
    load_tokenizer,
    merged_copy,
    resolve_backbone,
)
from alignment.collate import pad_examples, positions_from_mask
from alignment.errors import AlignmentError, CheckpointError
from alignment.tokenization import PromptResponseEncoder, ensure_pad_token
from ragkit.atomic import atomic_directory
from ragkit.errors import RagkitError

REWARD_FORMAT = 1
CONFIG_FILE = "reward_model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"


def init_head(hidden_size: int, generator: torch.Generator | None = None) -> nn.Linear:
    """``Linear(hidden_size, 1)`` with weights ~ N(0, 1/√(hidden_size + 1)) and bias 0."""
    head = nn.Linear(hidden_size, 1)
    with torch.no_grad():
        head.weight.normal_(0.0, 1.0 / math.sqrt(hidden_size + 1), generator=generator)
        head.bias.zero_()
    return head


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position with mask 1 in each row (left or right padding alike)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(-1)


class RewardModel(nn.Module):
    """Scores ``prompt + response`` texts with one scalar each (higher = preferred)."""

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        head: nn.Linear | None = None,
        max_length: int = 512,
        min_prompt_tokens: int = 8,
        padding_side: Literal["left", "right"] = "right",
        normalisation_bias: float = 0.0,
        base_model: str = "",
    ) -> None:
        super().__init__()
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError(
                "the reward model needs a pad token distinct from EOS (ensure_pad_token)"
            )
        self.backbone = backbone
        hidden = int(self._config().hidden_size)
        self.head = head if head is not None else init_head(hidden)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.min_prompt_tokens = min_prompt_tokens
        self.padding_side: Literal["left", "right"] = padding_side
        self.normalisation_bias = float(normalisation_bias)
        self.base_model = base_model
        self.encoder = PromptResponseEncoder(
            tokenizer, max_length=max_length, min_prompt_tokens=min_prompt_tokens
        )

    def _config(self) -> Any:
        return getattr(self.backbone, "config")  # noqa: B009 - nn.Module typing hides it

    @property
    def pad_token_id(self) -> int:
        """The dedicated pad token's id."""
        return int(self.tokenizer.pad_token_id)

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.head.weight.device

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | None = None,
        *,
        max_length: int = 512,
        min_prompt_tokens: int = 8,
        padding_side: Literal["left", "right"] = "right",
        dtype: str = "float32",
        init_adapter: str | None = None,
    ) -> RewardModel:
        """A fresh reward model on a pretrained backbone (``None``: the packaged SmolLM2).

        ``init_adapter``: a LoRA adapter merged into the backbone first (the SFT policy, as
        InstructGPT initialises its reward model). Adds a dedicated pad token (resizing the
        embeddings) and turns dropout off. The head is drawn from torch's global RNG: seed it
        for reproducible runs.
        """
        path = resolve_backbone(name_or_path)
        tokenizer = load_tokenizer(path)
        if init_adapter is None:
            from transformers import AutoModel

            backbone = load_pretrained(AutoModel, path, dtype)
        else:
            backbone = _backbone_with_adapter(path, dtype, name_or_path, init_adapter)
        ensure_pad_token(tokenizer, backbone)
        disable_dropout(backbone)
        return cls(
            backbone,
            tokenizer,
            max_length=max_length,
            min_prompt_tokens=min_prompt_tokens,
            padding_side=padding_side,
            base_model=(name_or_path or "packaged SmolLM2-135M-Instruct")
            + (f" + adapter {init_adapter}" if init_adapter else ""),
        )

    # ------------------------------------------------------------------ scoring

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw scores (no normalisation bias), float32, one per row, read at the last real token."""
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        hidden = out.last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[rows, last_token_index(attention_mask)]
        scores: torch.Tensor = self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)
        return scores.float()

    @torch.no_grad()
    def raw_score(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16
    ) -> torch.Tensor:
        """Scores without the normalisation bias (what training optimises)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return torch.zeros(0)
        was_training = self.training
        self.eval()
        examples = [
            self.encoder.encode_for_scoring(p, r) for p, r in zip(prompts, responses, strict=True)
        ]
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        out = torch.empty(len(examples))
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = pad_examples(
                    [examples[i] for i in idx], self.pad_token_id, self.padding_side
                )
                batch = batch.to(self.device)
                out[idx] = self(batch.input_ids, batch.attention_mask, batch.position_ids).cpu()
        finally:
            self.train(was_training)
        return out

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16
    ) -> torch.Tensor:
        """Normalised scores of each ``prompt + response`` (a 1-D float32 tensor on the CPU).

        Texts are joined as in training: the prompt (cut from the left when too long) followed by
        the response and an EOS token; sequences are sorted by length and run in batches.
        """
        return self.raw_score(prompts, responses, batch_size) + self.normalisation_bias

    def fit_normalisation(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16
    ) -> float:
        """Set the bias so that these reference responses score 0 on average; return it."""
        raw = self.raw_score(prompts, responses, batch_size)
        if raw.numel() == 0:
            raise ValueError("normalisation needs at least one reference response")
        self.normalisation_bias = -float(raw.double().mean())
        return self.normalisation_bias

    # ------------------------------------------------------------------ persistence

    def metadata(self) -> dict[str, Any]:
        """The JSON stored as ``reward_model.json``."""
        return {
            "format_version": REWARD_FORMAT,
            "kind": "ragkit.alignment.RewardModel",
            "normalisation_bias": self.normalisation_bias,
            "max_length": self.max_length,
            "min_prompt_tokens": self.min_prompt_tokens,
            "padding_side": self.padding_side,
            "hidden_size": int(self.head.in_features),
            "pad_token": self.tokenizer.pad_token,
            "base_model": self.base_model,
        }

    def save(self, directory: str | Path, extra_files: dict[str, str] | None = None) -> Path:
        """Write the model folder atomically (safetensors + JSON; LoRA weights merged).

        ``extra_files`` (name → text) are written into the folder too, e.g. a model card.
        """
        backbone = merged_copy(self.backbone)
        head = {
            "weight": self.head.weight.detach().cpu().contiguous(),
            "bias": self.head.bias.detach().cpu().contiguous(),
        }

        def fill(tmp: Path) -> None:
            backbone.save_pretrained(str(tmp / BACKBONE_DIR))  # type: ignore[operator]
            self.tokenizer.save_pretrained(str(tmp))
            save_file(head, str(tmp / HEAD_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps(self.metadata(), indent=2), encoding="utf-8")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")

        return atomic_directory(Path(directory), fill)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> RewardModel:
        """Load a folder written by :meth:`save` (no pickle is involved)."""
        from transformers import AutoModel

        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(
                f"not a reward model folder (no {CONFIG_FILE}): {directory}"
            ) from None
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"corrupt {CONFIG_FILE} in {directory}: {exc}") from None
        if meta.get("format_version") != REWARD_FORMAT:
            raise CheckpointError(
                f"reward model {directory} has format {meta.get('format_version')}, "
                f"this version reads {REWARD_FORMAT}"
            )
        tokenizer = load_tokenizer(str(directory))
        backbone = load_pretrained(AutoModel, str(directory / BACKBONE_DIR))
        disable_dropout(backbone)
        tensors = load_file(str(directory / HEAD_FILE))
        head = nn.Linear(int(meta["hidden_size"]), 1)
        with torch.no_grad():
            head.weight.copy_(tensors["weight"])
            head.bias.copy_(tensors["bias"])
        model = cls(
            backbone,
            tokenizer,
            head=head,
            max_length=int(meta["max_length"]),
            min_prompt_tokens=int(meta["min_prompt_tokens"]),
            padding_side=meta["padding_side"],
            normalisation_bias=float(meta["normalisation_bias"]),
            base_model=str(meta.get("base_model", "")),
        )
        model.eval()
        return model.to(device)


def _backbone_with_adapter(path: str, dtype: str, name: str | None, adapter: str) -> nn.Module:
    """The transformer (no LM head) of ``path`` with the LoRA ``adapter`` merged in.

    The adapter was trained on the causal LM, so it is merged there (the generator's own merge:
    the same base-model check and one-line errors) and the LM head is dropped afterwards.
    """
    from transformers import AutoModelForCausalLM

    from ragkit.generation.adapters import apply_adapter, packaged_adapter_name

    lm = load_pretrained(AutoModelForCausalLM, path, dtype)
    try:
        merged = apply_adapter(lm, packaged_adapter_name(adapter, name))
    except RagkitError as exc:
        raise AlignmentError(f"init_adapter: {exc}") from None
    backbone: nn.Module = merged.base_model
    return backbone
