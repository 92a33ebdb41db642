"""Locating and loading the transformer every alignment job starts from.

``None`` means the packaged SmolLM2-135M-Instruct (shipped as a GGUF). Decision: the alignment
jobs, their configs and their measured baselines were built on SmolLM2, so they keep it as their
default even though ``ragkit ask`` now defaults to Gemma 3 270M (issue 18); issue 20 moves RLHF to
the served default explicitly. The generation package owns its conversion to a plain Hugging Face folder
(``ragkit.generation.checkpoints.resolve_causal_lm``), and every other name or path goes
through the same resolver. Loading is done here once for SFT and the reward model so that both
add the same pad token and switch dropout off the same way.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignment.errors import AlignmentError
from ragkit.errors import ModelNotFoundError

_RESOLVER_MODULE = "ragkit.generation.checkpoints"
DEFAULT_BACKBONE = "smollm2"

_DROPOUT_ATTRIBUTES = ("attention_dropout", "dropout", "dropout_p", "attn_dropout")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_backbone(name_or_path: str | None) -> str:
    """A loadable Hugging Face id or folder for ``name_or_path`` (``None``: the default model)."""
    try:
        module = importlib.import_module(_RESOLVER_MODULE)
    except ImportError:
        module = None
    resolver = getattr(module, "resolve_causal_lm", None)
    if resolver is not None:
        return str(resolver(name_or_path if name_or_path is not None else DEFAULT_BACKBONE))
    if name_or_path is None:
        raise ModelNotFoundError(
            f"the default backbone (packaged SmolLM2) needs {_RESOLVER_MODULE}, which is not "
            "available in this install; set model.name_or_path to a Hugging Face folder or id"
        )
    if name_or_path.startswith((".", "/", "~")) and not Path(name_or_path).expanduser().exists():
        raise ModelNotFoundError(f"model folder not found: {name_or_path}")
    return name_or_path


def load_tokenizer(path: str) -> Any:
    """The tokenizer of ``path``, with a clear error when it cannot be loaded offline."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load a tokenizer from {path}: {exc}") from exc


def load_pretrained(auto_class: Any, path: str, dtype: str = "float32") -> Any:
    """``auto_class.from_pretrained(path)`` in ``dtype``, mapping load failures to a one-liner."""
    try:
        return auto_class.from_pretrained(path, dtype=DTYPES[dtype])
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load a model from {path}: {exc}") from exc


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0.

    With dropout off, two forward passes on the same input agree exactly: reward scores are
    deterministic and PPO's first probability ratio is exactly 1 (a checklist item).
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        # attention layers often keep a plain float (e.g. Llama's ``attention_dropout``) that
        # they pass to the attention kernel instead of using an nn.Dropout module
        for name in _DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        for name in (*_DROPOUT_ATTRIBUTES, "hidden_dropout", "resid_pdrop", "embd_pdrop"):
            if isinstance(getattr(config, name, None), float):
                setattr(config, name, 0.0)


def apply_lora(model: nn.Module, r: int, alpha: int, dropout: float, target_modules: Any) -> Any:
    """Wrap ``model`` with a LoRA adapter (peft); only the adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    try:
        config = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules
        )
        return get_peft_model(model, config)
    except ValueError as exc:
        raise AlignmentError(f"cannot apply LoRA: {exc}") from exc


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain (adapter-free) copy of ``model``: LoRA weights merged in, the original untouched."""
    import copy

    from peft import PeftModel

    if isinstance(model, PeftModel):
        clone = copy.deepcopy(model)
        merged: nn.Module = clone.merge_and_unload()
        return merged
    return model
