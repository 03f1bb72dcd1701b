"""Binary cross-entropy: on a label column, or on each row's positive and sampled negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recframe.losses.base import POINTWISE, Loss
from recframe.negatives.candidates import ScoredBatch, masked_logit
from recframe.registry import LOSSES


def binary_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                         sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean BCE of sigmoid(logits) against labels in [0, 1].

    Args:
        logits: (B,); labels: (B,); sample_weight: (B,) or None.
    Returns:
        scalar loss.
    """
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if sample_weight is None:
        return per_row.mean()
    return (per_row * sample_weight).sum() / sample_weight.sum().clamp(min=1e-12)


def sampled_binary_cross_entropy(logits: torch.Tensor, positive_column: torch.Tensor,
                                 sample_weight: torch.Tensor | None = None,
                                 masked: torch.Tensor | None = None) -> torch.Tensor:
    """BCE of each row's positive (label 1) and its unmasked negatives (label 0).

    Args:
        logits: (B, C) candidate logits.
        positive_column: (B,) column of each row's positive.
        sample_weight: (B,) or None, applied to every pair of the row.
        masked: (B, C) bool, True at the pairs left out; default: the logits at or below half
            ``masked_logit(logits.dtype)``.
    Returns:
        scalar: weighted mean over the unmasked (row, candidate) pairs.
    """
    labels = torch.zeros_like(logits)
    labels.scatter_(1, positive_column.unsqueeze(1), 1.0)
    valid = (~masked if masked is not None else logits > masked_logit(logits.dtype) / 2).to(logits.dtype)
    weight = valid if sample_weight is None else valid * sample_weight.unsqueeze(1)
    per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_pair * weight).sum() / weight.sum().clamp(min=1e-12)


@LOSSES.register()
class BinaryCrossEntropy(Loss):
    """Pointwise BCE of sigmoid(similarity / temperature).

    Without sampled negatives: each row's (user, item) against the label column. With a
    negative sampler: each row's positive (label 1) against its unmasked candidates (label 0;
    no logQ: the probabilities are not a softmax); the label column is not read.
    """

    kind = POINTWISE
    label_bounds = (0.0, 1.0)

    @classmethod
    def check_config(cls, message, path, ctx) -> None:
        data = ctx.config.data_config
        if not data.label_fields and data.WhichOneof("sampler") is None:
            ctx.add("data_config.label_fields", f"empty, but {ctx.loss_name(cls)} ({path}) reads the label column, "
                                                "expected at least one label field (or a negative sampler, "
                                                "whose negatives are the 0 labels)")

    def forward(self, scored: ScoredBatch) -> torch.Tensor:
        if scored.has_sampled_negatives:
            candidates = scored.candidates
            return sampled_binary_cross_entropy(candidates.logits(logq_correction=False),
                                                candidates.positive_column, scored.sample_weight,
                                                masked=candidates.masked)
        return binary_cross_entropy(scored.pointwise_logits(), scored.labels(), scored.sample_weight)


__all__ = ["BinaryCrossEntropy", "binary_cross_entropy", "sampled_binary_cross_entropy"]
