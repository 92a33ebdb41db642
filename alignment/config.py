"""Job configurations: pydantic models, loadable from YAML, unknown keys rejected.

A typo in a config (``learning_rte``) must fail before hours of training, not be ignored, so
every model forbids extra keys and :func:`load_config` turns pydantic's report into one line
that names the offending key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alignment.errors import ConfigError

DEFAULT_HH_DATA = Path("../shared/data/hh_harmless_test.jsonl.gz")


class StrictSettings(BaseModel):
    """Base of every config section: an unknown (e.g. mistyped) key is an error."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    """``allow_inf_nan=False``: a bound such as ``gt=0`` lets ``.inf`` through (a learning rate
    of infinity would train on), so infinities and NaN are refused by name everywhere."""


class LoraSettings(StrictSettings):
    """LoRA adapter shape; ``target_modules`` as peft takes it ("all-linear" or module names)."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class ModelSettings(StrictSettings):
    """Which backbone to start from and which weights to train.

    ``name_or_path`` None is the packaged SmolLM2-135M-Instruct. ``finetune``: ``full`` trains
    every weight, ``lora`` an adapter (merged into the saved model). ``freeze_layers`` keeps the
    embeddings and the first N transformer blocks frozen in full fine-tuning (cheaper backward).
    """

    name_or_path: str | None = None
    finetune: Literal["full", "lora"] = "full"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    freeze_layers: int = Field(0, ge=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class PreferenceDataSettings(StrictSettings):
    """Where preference pairs come from and how they are split.

    ``format``: ``hh`` (two dialogues per line), ``fields`` (prompt/chosen/rejected fields).
    """

    path: Path = DEFAULT_HH_DATA
    format: Literal["hh", "fields"] = "hh"
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    limit: int | None = Field(None, ge=2)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    validation_path: Path | None = None
    split_seed: int = 0


class DemonstrationDataSettings(StrictSettings):
    """Where SFT demonstrations come from.

    ``format``: ``hh_chosen`` (the chosen answers of an HH preference file), ``pairs`` (the chosen
    field of a prompt/chosen/rejected file) or ``jsonl`` (``{prompt, response}`` or
    ``{messages}`` lines).
    """

    path: Path = DEFAULT_HH_DATA
    format: Literal["hh_chosen", "pairs", "jsonl"] = "hh_chosen"
    prompt_field: str = "prompt"
    response_field: str = "response"
    messages_field: str = "messages"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    limit: int | None = Field(None, ge=2)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    validation_path: Path | None = None
    split_seed: int = 0


class TrainingSettings(StrictSettings):
    """Optimisation and bookkeeping; steps are optimizer steps (after gradient accumulation)."""

    learning_rate: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["linear", "constant"] = "linear"
    group_by_length: bool = True
    seed: int = 0
    log_every: int = Field(1, ge=1)
    eval_every: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    progress: bool = True
    threads: int | None = Field(None, ge=1)


class NormalisationSettings(StrictSettings):
    """The bias added after training so that reference responses score 0 on average.

    ``reference``: which responses (of the validation split, or of the train split when there
    is no validation) define 0; ``none`` leaves the raw scores.
    """

    reference: Literal["chosen", "chosen_and_rejected", "none"] = "chosen_and_rejected"
    max_samples: int = Field(512, ge=1)


class RewardJobConfig(StrictSettings):
    """``ragkit align reward``: train a pairwise reward model.

    ``init_adapter``: a LoRA adapter of the backbone (a packaged name such as
    ``grounded-qa-gemma``, ``grounded-qa`` for the backbone's own, or a peft folder) merged into
    it before the reward head and the trainable weights are added. InstructGPT starts its reward
    model from the SFT policy: that model already reads the served prompts, so the head learns
    to judge answers on features made for them.
    """

    model: ModelSettings = Field(default_factory=ModelSettings)
    init_adapter: str | None = None
    data: PreferenceDataSettings = Field(default_factory=PreferenceDataSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    normalisation: NormalisationSettings = Field(default_factory=NormalisationSettings)
    max_length: int = Field(512, ge=8)
    min_prompt_tokens: int = Field(8, ge=0)
    padding_side: Literal["left", "right"] = "right"
    output_dir: Path = Path("runs/reward")

    @model_validator(mode="after")
    def _check(self) -> RewardJobConfig:
        if self.min_prompt_tokens >= self.max_length:
            raise ValueError("min_prompt_tokens must be smaller than max_length")
        return self


class SFTJobConfig(StrictSettings):
    """``ragkit align sft``: supervised fine-tuning on demonstrations (loss on responses only).

    ``init_adapter``: continue training an existing LoRA adapter (a packaged name such as
    ``grounded-qa-gemma``, or a peft folder) instead of starting a fresh one; needs
    ``model.finetune: lora``, and the adapter's own rank and target modules replace
    ``model.lora``. It is how a served adapter gets more SFT on new data, e.g. the control run
    that PPO of the same adapter is compared with.
    """

    model: ModelSettings = Field(default_factory=lambda: ModelSettings(finetune="lora"))
    init_adapter: str | None = None
    data: DemonstrationDataSettings = Field(default_factory=DemonstrationDataSettings)
    training: TrainingSettings = Field(
        default_factory=lambda: TrainingSettings(learning_rate=2e-4, batch_size=4)
    )
    max_length: int = Field(512, ge=8)
    min_prompt_tokens: int = Field(8, ge=0)
    output_dir: Path = Path("runs/sft")

    @model_validator(mode="after")
    def _check(self) -> SFTJobConfig:
        if self.min_prompt_tokens >= self.max_length:
            raise ValueError("min_prompt_tokens must be smaller than max_length")
        if self.init_adapter is not None and self.model.finetune != "lora":
            raise ValueError("init_adapter needs model.finetune: lora (the adapter is trained)")
        return self


C = TypeVar("C", bound=BaseModel)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {error['msg']}")
    return "; ".join(parts)


def validate_config(cls: type[C], data: object, source: str = "config") -> C:
    """``cls.model_validate(data)`` with errors as one :class:`ConfigError` line."""
    try:
        return cls.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def override(config: C, values: Mapping[str, object], source: str = "command line") -> C:
    """A copy of ``config`` with dotted-path settings replaced (``None`` keeps the setting).

    One place for every front end (``ragkit align``, the example scripts) to apply command-line
    overrides such as ``{"data.limit": 300, "output_dir": out}``; the result is validated again.
    """
    data = config.model_dump()
    for path, value in values.items():
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = data
        for name in parents:
            node = node[name]
        node[leaf] = value
    return validate_config(type(config), data, source)


def load_config(cls: type[C], path: str | os.PathLike[str]) -> C:
    """Read a job config of type ``cls`` from a YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a folder, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a text (UTF-8) YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where} ({problem})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return validate_config(cls, data, str(path))


def job_config(
    cls: type[C],
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> C:
    """The config a front end runs (``ragkit align``, the example scripts): the YAML file at
    ``path`` (the defaults when None) with the command line's dotted-path ``overrides`` applied
    (see :func:`override`; a None value keeps the setting)."""
    config = load_config(cls, path) if path is not None else validate_config(cls, None, "defaults")
    return override(config, overrides or {})


def dump_config(config: BaseModel) -> str:
    """The config as YAML (paths as strings), as saved next to a trained model."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
