"""Metrics: full-corpus retrieval metrics (:mod:`~recframe.metrics.retrieval`) and the
registered training-time metrics (:mod:`~recframe.metrics.training`)."""

from recframe.metrics.item_index import ItemIndex
from recframe.metrics.retrieval import (
    RetrievalMetrics,
    evaluate_retrieval,
    exact_top_k,
    remove_targets_from_exclusion,
)
from recframe.metrics.training import AUC, Accuracy, InBatchRecallAtK, TrainingMetric, create_metric

__all__ = [
    "AUC",
    "Accuracy",
    "InBatchRecallAtK",
    "ItemIndex",
    "RetrievalMetrics",
    "TrainingMetric",
    "create_metric",
    "evaluate_retrieval",
    "exact_top_k",
    "remove_targets_from_exclusion",
]
