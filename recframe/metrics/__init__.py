"""Metrics: full-corpus retrieval metrics (:mod:`~recframe.metrics.retrieval`), the
registered training-time metrics (:mod:`~recframe.metrics.training`) and the pointwise
evaluation metrics of labelled rows (:mod:`~recframe.metrics.pointwise`)."""

from recframe.metrics.item_index import ItemIndex
from recframe.metrics.pointwise import PointwiseMetrics
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
    "PointwiseMetrics",
    "RetrievalMetrics",
    "TrainingMetric",
    "create_metric",
    "evaluate_retrieval",
    "exact_top_k",
    "remove_targets_from_exclusion",
]
