"""Evaluation metrics. Full-corpus retrieval metrics live in :mod:`recframe.metrics.retrieval`."""

from recframe.metrics.retrieval import (
    ItemIndex,
    RetrievalMetrics,
    evaluate_retrieval,
    exact_top_k,
    remove_targets_from_exclusion,
)

__all__ = [
    "ItemIndex",
    "RetrievalMetrics",
    "evaluate_retrieval",
    "exact_top_k",
    "remove_targets_from_exclusion",
]
