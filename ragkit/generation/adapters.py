"""LoRA adapters on top of a generator's base model: packaged by name, or any peft folder.

Why merge at load time: a merged model generates exactly as fast as the base (no extra
matmuls per layer), and the adapter is a few MB on disk instead of a second copy of the model.
The adapter must have been trained on the same base architecture; its vocabulary is not
touched (SFT adds a pad token for training only, and the adapter is saved without embeddings),
so it applies to the unmodified base.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ragkit.errors import RagkitError

ADAPTER_CONFIG = "adapter_config.json"
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "adapters"
# name -> folder under ragkit/adapters/ (shipped in the wheel)
PACKAGED_ADAPTERS: dict[str, str] = {
    "grounded-qa-smollm2": "grounded_qa",
    "grounded-qa-gemma": "grounded_qa_gemma",
    # issue 20's two stages of the default generator's adapter: SFT only (the folder above:
    # it measured better on held-out data, so grounded-qa names it) and SFT + PPO against the
    # feedback reward model (its card has the scores)
    "grounded-qa-sft": "grounded_qa_gemma",
    "grounded-qa-rlhf": "grounded_qa_gemma_rlhf",
}
GROUNDED_QA_FOR_MODEL: dict[str, str] = {
    "smollm2": "grounded-qa-smollm2",
    "gemma3-270m": "grounded-qa-gemma",
}
"""``grounded-qa`` names the adapter trained for the generator it is applied to."""


class AdapterError(RagkitError):
    """An adapter that cannot be found or applied."""


def packaged_adapter_name(adapter: str, model: str | None) -> str:
    """``grounded-qa`` → the packaged grounded-QA adapter of ``model`` (None: the default)."""
    if adapter != "grounded-qa":
        return adapter
    from ragkit.generation.checkpoints import (
        DEFAULT_GENERATOR,
        GEMMA_ALIASES,
        SMOLLM2_ALIASES,
    )

    key = (model or "default").strip().lower()
    key = DEFAULT_GENERATOR if key == "default" else key
    if key in SMOLLM2_ALIASES:
        return GROUNDED_QA_FOR_MODEL["smollm2"]
    if key in GEMMA_ALIASES:
        return GROUNDED_QA_FOR_MODEL["gemma3-270m"]
    raise AdapterError(
        f"the packaged grounded-qa adapters fit the packaged models only "
        f"({', '.join(sorted(GROUNDED_QA_FOR_MODEL))}), not {model!r}"
    )


def resolve_adapter(adapter: str | os.PathLike[str]) -> Path:
    """The folder of ``adapter``: a packaged name (``grounded-qa-gemma``) or a peft folder.

    Symbolic links are resolved here, once: the feedback loop promotes an adapter by pointing
    the serving folder (a link) at a new version, and a load must read the config and the
    weights of one version, never one of each.
    """
    text = os.fspath(adapter)
    if text in PACKAGED_ADAPTERS:
        folder = PACKAGED_DIR / PACKAGED_ADAPTERS[text]
    else:
        folder = Path(text).expanduser()
    if not (folder / ADAPTER_CONFIG).is_file():
        known = ", ".join(sorted(PACKAGED_ADAPTERS))
        raise AdapterError(
            f"adapter {text!r} is neither a packaged adapter ({known}) nor a folder with "
            f"{ADAPTER_CONFIG} (a peft LoRA adapter, e.g. the adapter/ folder of a LoRA SFT run)"
        )
    return folder.resolve()


def adapter_info(folder: Path) -> dict[str, Any]:
    """The adapter's peft config (type, rank, target modules, recorded base model)."""
    try:
        info: dict[str, Any] = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"cannot read {folder / ADAPTER_CONFIG}: {exc}") from None
    if info.get("peft_type") != "LORA":
        raise AdapterError(
            f"{folder} holds a {info.get('peft_type')!r} adapter; only LoRA adapters are supported"
        )
    return info


def apply_adapter(model: Any, adapter: str | os.PathLike[str]) -> Any:
    """``model`` with the LoRA adapter merged into its weights (a plain transformers model)."""
    from peft import PeftModel

    folder = resolve_adapter(adapter)
    info = adapter_info(folder)
    trained_on = (info.get("auto_mapping") or {}).get("base_model_class")
    model_class = type(model).__name__
    if trained_on and trained_on != model_class:
        raise AdapterError(
            f"adapter {os.fspath(adapter)!r} was trained for {trained_on} "
            f"({info.get('base_model_name_or_path')}), not for this {model_class} model"
        )
    try:
        with warnings.catch_warnings():
            # transformers deprecation noise from peft's checks; nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdapterError(
            f"adapter {os.fspath(adapter)!r} does not fit this base model: {first}"
        ) from None
    merged = wrapped.merge_and_unload()
    merged.eval()
    return merged
