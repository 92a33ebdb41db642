"""Loading a tokenizer, config and model from whatever :func:`resolve_causal_lm` returned.

Hub ids are tried from the local Hugging Face cache first (no network round trips, which on a
machine without network cost ~20 s of retries), then online unless offline mode is set. Every
failure becomes a one-line :class:`ModelNotFoundError`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ragkit.errors import ModelNotFoundError
from ragkit.generation.checkpoints import is_offline

T = TypeVar("T")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_offline_first(loader: Callable[..., T], source: Path | str, what: str, **kwargs: Any) -> T:
    """Call ``loader(source, **kwargs)``, preferring local files for hub ids."""
    try:
        if isinstance(source, Path):
            return loader(str(source), **kwargs)
        try:
            return loader(source, local_files_only=True, **kwargs)
        except OSError:
            if is_offline():
                raise
            return loader(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(f"cannot load {what} from {source}: {_first_line(exc)}") from exc


def load_tokenizer(source: Path | str) -> Any:
    """The tokenizer, set up for batched generation: left padding, a pad id always defined."""
    from transformers import AutoTokenizer

    tokenizer = load_offline_first(AutoTokenizer.from_pretrained, source, "tokenizer")
    tokenizer.padding_side = "left"
    return tokenizer


def load_config(source: Path | str) -> Any:
    """The model configuration only (no weights): enough for the context length."""
    from transformers import AutoConfig

    return load_offline_first(AutoConfig.from_pretrained, source, "model config")


def load_model(source: Path | str, device: str, dtype: Any) -> Any:
    """The causal LM on ``device`` in ``dtype``, in eval mode."""
    from transformers import AutoModelForCausalLM

    model: Any = load_offline_first(
        AutoModelForCausalLM.from_pretrained, source, "causal language model", dtype=dtype
    )
    model.to(device)
    model.eval()
    return model


def context_length_of(config: Any, tokenizer: Any | None = None) -> int:
    """Positions the model can attend to: the config's limit, capped by the tokenizer's."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limits = []
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 10_000_000:
        limits.append(tokenizer_limit)
    return min(limits) if limits else 2048
