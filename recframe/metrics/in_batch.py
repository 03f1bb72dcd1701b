"""Training-time metrics: in-batch recall@K (listwise), AUC and accuracy (pointwise).

In-batch recall@K ranks each row's positive only against the batch's candidates; it is
NOT full-corpus recall (see recframe.metrics.retrieval for that).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import BinaryAUROC, BinaryAccuracy

from recframe.protos import metric_pb2


class InBatchRecallAtK(nn.Module):
    """Share of rows whose positive is among the top K of its row of logits.

    update(logits (B, C), positive_column (B,)); compute() -> float. Ties count against
    the positive (a candidate with an equal logit ranks ahead).
    """

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.name = f"in_batch_recall@{top_k}"
        self.hits = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, positive_column: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        positive = logits.gather(1, positive_column.unsqueeze(1))
        ahead = (logits >= positive).sum(dim=1) - 1
        self.hits += float((ahead < self.top_k).sum())
        self.count += logits.shape[0]

    def compute(self) -> float:
        return self.hits / max(self.count, 1)

    def reset(self) -> None:
        self.hits, self.count = 0.0, 0


class _Pointwise(nn.Module):
    """Wraps a torchmetrics binary metric over sigmoid(logits) and labels."""

    def __init__(self, name: str, metric: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.metric = metric

    @torch.no_grad()
    def update(self, logits: torch.Tensor, positive_column: torch.Tensor | None, labels: torch.Tensor) -> None:
        self.metric.update(torch.sigmoid(logits.detach().float()).cpu(), (labels > 0.5).long().cpu())

    def compute(self) -> float:
        return float(self.metric.compute())

    def reset(self) -> None:
        self.metric.reset()


def create_metric(config: metric_pb2.MetricConfig) -> nn.Module:
    """Build a training metric from its config."""
    which = config.WhichOneof("metric")
    if which == "in_batch_recall_at_k":
        return InBatchRecallAtK(config.in_batch_recall_at_k.top_k)
    if which == "auc":
        return _Pointwise("auc", BinaryAUROC())
    if which == "accuracy":
        return _Pointwise("accuracy", BinaryAccuracy(threshold=config.accuracy.threshold))
    raise ValueError(f"unknown metric {which}")
