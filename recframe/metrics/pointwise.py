"""Pointwise evaluation metrics (``eval_config.pointwise_metrics``): AUC and accuracy of a
binary_cross_entropy model on the labelled rows of the evaluation data.

Each evaluation row is scored as the loss scores a training row: its own user and item
features through the two towers, logit = similarity / temperature
(:meth:`~recframe.negatives.candidates.ScoredBatch.pointwise_logits`), probability =
sigmoid(logit), against label > 0.5. The metrics are those of the training metrics of the same names
(:class:`~recframe.metrics.training.AUC`, :class:`~recframe.metrics.training.Accuracy`:
torchmetrics' ``binary_auroc`` / ``binary_accuracy``), computed once over every row of the
evaluation data (under torchrun the ranks' rows are gathered first, so the values are those of
one process over the whole file). Sample weights are not applied.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from recframe.protoutil import oneof_message


class PointwiseMetrics:
    """The metrics of ``eval_config.pointwise_metrics`` over (logit, label) pairs.

    ``auc`` is torchmetrics' ``binary_auroc`` (ties count 1/2) of the logits' order (the order
    of sigmoid(logit), without its rounding: float32 ties every logit above ~17 at 1.0, float64
    above ~37); ``accuracy`` its ``binary_accuracy`` of sigmoid(logit) in float64 at the entry's
    threshold (probability > threshold predicts 1).

    Args:
        configs: the PointwiseMetricConfig entries (each ``auc {}`` or ``accuracy { threshold }``).
    """

    def __init__(self, configs: Sequence) -> None:
        self.entries = [(config.WhichOneof("metric"), oneof_message(config, "metric")) for config in configs
                        if config.WhichOneof("metric") is not None]
        self.names = [name for name, _ in self.entries]

    def compute(self, logits: torch.Tensor, labels: torch.Tensor, source: str = "the evaluation data") -> dict[str, float]:
        """``{name: value}`` over (N,) logits and their (N,) labels (positive when > 0.5).

        Raises:
            ValueError: AUC is asked for and the rows hold one class only (or none).
        """
        logits, labels = logits.detach().reshape(-1).cpu().double(), labels.detach().reshape(-1).cpu()
        if logits.shape != labels.shape:
            raise ValueError(f"{logits.numel()} logits for {labels.numel()} labels")
        target = (labels > 0.5).long()
        positives = int(target.sum())
        if "auc" in self.names and not 0 < positives < target.numel():
            raise ValueError(f"{source}: AUC needs positive and negative rows, got {positives} positive of "
                             f"{target.numel()} labelled rows (label > 0.5 is positive)")
        probs = torch.sigmoid(logits)
        values = {}
        for name, message in self.entries:
            if name == "auc":  # on the logits' order, which sigmoid keeps but would round away at the ends
                unique, order = torch.unique(logits, return_inverse=True)
                scores = order.double() / max(len(unique) - 1, 1)
                values[name] = float(binary_auroc(scores, target, validate_args=False))
            else:
                values[name] = float(binary_accuracy(probs, target, threshold=float(message.threshold),
                                                     validate_args=False))
        return values


__all__ = ["PointwiseMetrics"]
