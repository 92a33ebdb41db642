"""Alignment of the generator: preference data, SFT and a pairwise reward model.

Everything here imports from ``ragkit`` (models, errors, atomic writes) and nothing in
``ragkit`` imports it back; the CLI is the one place that ties them together.
"""

from __future__ import annotations

from alignment.batching import group_batches
from alignment.collate import Batch, collate_demonstrations, collate_pairs, pad_examples
from alignment.config import (
    DemonstrationDataSettings,
    LoraSettings,
    ModelSettings,
    NormalisationSettings,
    PreferenceDataSettings,
    RewardJobConfig,
    SFTJobConfig,
    TrainingSettings,
    load_config,
    validate_config,
)
from alignment.data import (
    ChatMessage,
    Demonstration,
    Loaded,
    PreferencePair,
    Split,
    demonstrations_from_dataset,
    demonstrations_from_pairs,
    pairs_from_dataset,
    read_demonstrations_jsonl,
    read_hh_jsonl,
    read_preference_jsonl,
    train_validation_split,
)
from alignment.errors import AlignmentError, CheckpointError, ConfigError, DataFormatError
from alignment.hh import split_hh_pair
from alignment.losses import bradley_terry_loss, pairwise_accuracy, pairwise_metrics
from alignment.report import DataReport
from alignment.reward_model import RewardModel
from alignment.reward_training import RewardTrainingResult, evaluate_pairs, train_reward_model
from alignment.sft import SFTResult, train_sft
from alignment.tokenization import (
    PromptResponseEncoder,
    TokenizedDemonstration,
    TokenizedPair,
    ensure_pad_token,
    tokenize_demonstrations,
    tokenize_pairs,
)

__all__ = [
    "AlignmentError",
    "Batch",
    "ChatMessage",
    "CheckpointError",
    "ConfigError",
    "DataFormatError",
    "DataReport",
    "Demonstration",
    "DemonstrationDataSettings",
    "Loaded",
    "LoraSettings",
    "ModelSettings",
    "NormalisationSettings",
    "PreferenceDataSettings",
    "PreferencePair",
    "PromptResponseEncoder",
    "RewardJobConfig",
    "RewardModel",
    "RewardTrainingResult",
    "SFTJobConfig",
    "SFTResult",
    "Split",
    "TokenizedDemonstration",
    "TokenizedPair",
    "TrainingSettings",
    "bradley_terry_loss",
    "collate_demonstrations",
    "collate_pairs",
    "demonstrations_from_dataset",
    "demonstrations_from_pairs",
    "ensure_pad_token",
    "evaluate_pairs",
    "group_batches",
    "load_config",
    "pad_examples",
    "pairs_from_dataset",
    "pairwise_accuracy",
    "pairwise_metrics",
    "read_demonstrations_jsonl",
    "read_hh_jsonl",
    "read_preference_jsonl",
    "split_hh_pair",
    "tokenize_demonstrations",
    "tokenize_pairs",
    "train_reward_model",
    "train_sft",
    "train_validation_split",
    "validate_config",
]
