"""Evaluation: retrieval metrics (recall, MRR, nDCG), SQuAD EM/F1, abstention, citations."""

from ragkit.evaluation.datasets import (
    EvalDataset,
    EvalQuestion,
    load_dataset,
    read_beir,
    read_jsonl_questions,
    read_squad,
)
from ragkit.evaluation.metrics import (
    abstained,
    exact_match,
    groundedness,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    token_f1,
)
from ragkit.evaluation.runner import (
    EvalReport,
    QuestionResult,
    evaluate,
    gold_chunks_for,
    write_failures,
)
from ragkit.evaluation.session import GENERATE_K, run_evaluation

__all__ = [
    "GENERATE_K",
    "EvalDataset",
    "EvalQuestion",
    "EvalReport",
    "QuestionResult",
    "abstained",
    "evaluate",
    "exact_match",
    "gold_chunks_for",
    "groundedness",
    "hit_at_k",
    "load_dataset",
    "mrr_at_k",
    "ndcg_at_k",
    "normalize_answer",
    "read_beir",
    "read_jsonl_questions",
    "read_squad",
    "recall_at_k",
    "run_evaluation",
    "token_f1",
    "write_failures",
]
