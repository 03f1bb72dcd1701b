"""Pointwise binary cross-entropy on a label column."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
                                 sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE of each row's positive (label 1) and its unmasked negatives (label 0).

    Args:
        logits: (B, C) candidate logits, masked entries <= MASKED_LOGIT / 2 are left out.
        positive_column: (B,) column of each row's positive.
        sample_weight: (B,) or None, applied to every pair of the row.
    Returns:
        scalar: weighted mean over the unmasked (row, candidate) pairs.
    """
    from recframe.losses.softmax import MASKED_LOGIT

    labels = torch.zeros_like(logits)
    labels.scatter_(1, positive_column.unsqueeze(1), 1.0)
    valid = (logits > MASKED_LOGIT / 2).to(logits.dtype)
    weight = valid if sample_weight is None else valid * sample_weight.unsqueeze(1)
    per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_pair * weight).sum() / weight.sum().clamp(min=1e-12)
