"""The feedback loop: served feedback → reward model → PPO → evaluation → promotion.

``run_feedback_loop(feedback_db, config)`` runs it once (docs/alignment.md, "The feedback
loop"); the pieces are usable alone: :func:`paired_bootstrap` (the promotion rule),
:func:`promote_adapter` / :func:`roll_back` / :func:`recover_serving_adapter` (the serving
folder), :class:`AnswerScoreEvaluator` (the default evaluation).
"""

from alignment.feedback_loop.config import (
    EvaluationSettings,
    FeedbackLoopConfig,
    FeedbackSettings,
    LoopPPOSettings,
    PromotionSettings,
    ServingSettings,
)
from alignment.feedback_loop.data import (
    FeedbackLoopError,
    FeedbackMismatchError,
    NotEnoughFeedbackError,
    ServedPromptRenderer,
    canonical_model,
)
from alignment.feedback_loop.evaluation import AnswerScoreEvaluator, EvaluateFn
from alignment.feedback_loop.promotion import (
    CARD_FILE,
    Promotion,
    PromotionError,
    live_version,
    promote_adapter,
    read_card,
    recover_serving_adapter,
    roll_back,
    versions_dir,
)
from alignment.feedback_loop.run import FeedbackLoopResult, as_loop_config, run_feedback_loop
from alignment.feedback_loop.stages import STAGES_FILE, CurrentAdapter, StageLog
from alignment.feedback_loop.stats import PairedComparison, paired_bootstrap

__all__ = [
    "CARD_FILE",
    "STAGES_FILE",
    "AnswerScoreEvaluator",
    "CurrentAdapter",
    "EvaluateFn",
    "EvaluationSettings",
    "FeedbackLoopConfig",
    "FeedbackLoopError",
    "FeedbackLoopResult",
    "FeedbackMismatchError",
    "FeedbackSettings",
    "LoopPPOSettings",
    "NotEnoughFeedbackError",
    "PairedComparison",
    "Promotion",
    "PromotionError",
    "PromotionSettings",
    "ServedPromptRenderer",
    "ServingSettings",
    "StageLog",
    "as_loop_config",
    "canonical_model",
    "live_version",
    "paired_bootstrap",
    "promote_adapter",
    "read_card",
    "recover_serving_adapter",
    "roll_back",
    "run_feedback_loop",
    "versions_dir",
]
