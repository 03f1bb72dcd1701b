"""Training-time metrics (METRICS registry): in-batch recall@K, AUC and accuracy.

In-batch recall@K ranks each row's positive only against the batch's candidates; it is
NOT full-corpus recall (see :mod:`recframe.metrics.retrieval` for that). A new metric is a
proto message (a member of ``MetricConfig.metric``), a :class:`TrainingMetric` subclass
registered under the message's name, and its import in ``recframe/metrics/__init__.py``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from recframe.config.report import AT_LEAST_ONE, OPEN_UNIT
from recframe.losses.base import LISTWISE, POINTWISE
from recframe.negatives.candidates import ScoredBatch
from recframe.protoutil import oneof_message
from recframe.registry import METRICS


class TrainingMetric(nn.Module):
    """A metric accumulated over training batches, logged and reset at each log step.

    Subclasses set ``requires_loss`` (the loss kind whose outputs they read: LISTWISE or
    POINTWISE; the validator refuses the metric without such a loss) and implement
    :meth:`update`, :meth:`compute` and :meth:`reset`; ``name`` is the key in the logs.

    Args:
        config: the metric's config message.
    """

    requires_loss: ClassVar[str] = LISTWISE
    config_ranges: ClassVar[dict] = {}

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.name = type(self).__name__.lower()

    def update(self, scored: ScoredBatch) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError


@METRICS.register()
class InBatchRecallAtK(TrainingMetric):
    """Share of rows whose positive is among the top K of its row of candidate logits.

    Ties count against the positive (a candidate with an equal logit ranks ahead).
    """

    requires_loss = LISTWISE
    config_ranges = {"top_k": AT_LEAST_ONE}

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.top_k = int(config.top_k)
        self.name = f"in_batch_recall@{self.top_k}"
        self.hits: torch.Tensor | float = 0.0  # a tensor on the logits' device once updated
        self.count = 0

    @torch.no_grad()
    def update(self, scored: ScoredBatch) -> None:
        candidates = scored.candidates
        self.update_logits(candidates.logits(), candidates.positive_column)

    @torch.no_grad()
    def update_logits(self, logits: torch.Tensor, positive_column: torch.Tensor) -> None:
        """Add (B, C) logits whose positive is at ``positive_column`` (B,)."""
        positive = logits.gather(1, positive_column.unsqueeze(1))
        ahead = (logits >= positive).sum(dim=1) - 1
        self.hits = self.hits + (ahead < self.top_k).sum()  # read back only by compute()
        self.count += logits.shape[0]

    def compute(self) -> float:
        return float(self.hits) / max(self.count, 1)

    def reset(self) -> None:
        self.hits, self.count = 0.0, 0


class _BinaryMetric(TrainingMetric):
    """A binary metric (a torchmetrics functional) over sigmoid(logit) and label > 0.5 of the
    binary task (with sampled negatives: the sampled BCE's unmasked pairs, see
    ScoredBatch.binary_pairs). The pairs of a log window are kept on their device and only
    filtered and read back by :meth:`compute` (a step never waits for the device)."""

    requires_loss = POINTWISE

    def __init__(self, config: Any, function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__(config)
        self.function = function
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    @torch.no_grad()
    def update(self, scored: ScoredBatch) -> None:
        self.update_logits(*scored.binary_pairs())

    @torch.no_grad()
    def update_logits(self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add (M,) logits with their (M,) labels; ``valid`` (M,) bool leaves pairs out."""
        self.pairs.append((torch.sigmoid(logits.detach().float()), labels > 0.5, valid))

    def compute(self) -> float:
        if not self.pairs:
            return float("nan")
        probs = torch.cat([p for p, _, _ in self.pairs])
        labels = torch.cat([t for _, t, _ in self.pairs])
        if any(v is not None for _, _, v in self.pairs):
            keep = torch.cat([v if v is not None else torch.ones_like(t) for _, t, v in self.pairs])
            probs, labels = probs[keep], labels[keep]
        return float(self.function(probs, labels.long()))

    def reset(self) -> None:
        self.pairs = []


@METRICS.register()
class AUC(_BinaryMetric):
    """Area under the ROC curve of the binary task."""

    def __init__(self, config: Any) -> None:
        super().__init__(config, lambda probs, labels: binary_auroc(probs, labels, validate_args=False))
        self.name = "auc"


@METRICS.register()
class Accuracy(_BinaryMetric):
    """Accuracy of sigmoid(logit) > threshold against label > 0.5."""

    config_ranges = {"threshold": OPEN_UNIT}

    def __init__(self, config: Any) -> None:
        threshold = float(config.threshold)
        super().__init__(config, lambda probs, labels: binary_accuracy(probs, labels, threshold=threshold,
                                                                       validate_args=False))
        self.name = "accuracy"


def create_metric(config: Any) -> TrainingMetric:
    """The registered metric of a MetricConfig (by the name of its set message)."""
    message = oneof_message(config, "metric")
    return METRICS.get(type(message).DESCRIPTOR.name)(message)


__all__ = ["AUC", "Accuracy", "InBatchRecallAtK", "TrainingMetric", "create_metric"]
