"""Softmax cross-entropy over a user x candidate logit matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logit given to masked candidates: exp() underflows to exactly 0 in float32 and bf16,
# and it stays finite so a masked entry never turns the loss into inf or nan.
MASKED_LOGIT = -1e9


def mask_accidental_hits(logits: torch.Tensor, row_keys: torch.Tensor, candidate_keys: torch.Tensor,
                         positive_column: torch.Tensor) -> torch.Tensor:
    """Mask candidates that are the row's own positive item, except the positive itself.

    Args:
        logits: (B, C) user x candidate logits.
        row_keys: (B,) item key of each row's positive.
        candidate_keys: (C,) item key of each candidate.
        positive_column: (B,) column index in [0, C) of each row's positive among the candidates.
    Returns:
        (B, C) logits with accidental hits set to MASKED_LOGIT.
    """
    hits = row_keys.unsqueeze(1) == candidate_keys.unsqueeze(0)
    # Un-mark each row's own positive: B writes instead of a (B, C) comparison and AND.
    rows = torch.arange(hits.shape[0], device=hits.device)
    hits[rows, positive_column] = False
    return logits.masked_fill(hits, MASKED_LOGIT)


def softmax_cross_entropy(logits: torch.Tensor, positive_column: torch.Tensor,
                          sample_weight: torch.Tensor | None = None,
                          label_smoothing: float = 0.0) -> torch.Tensor:
    """Weighted mean over rows of -sum_c target_c * log_softmax(logits)_c.

    The target is (1 - label_smoothing) on the positive plus label_smoothing spread
    uniformly over the row's unmasked candidates (masked ones get no target mass).

    Args:
        logits: (B, C), masked entries equal to MASKED_LOGIT.
        positive_column: (B,) index of each row's positive.
        sample_weight: (B,) or None.
    Returns:
        scalar loss.
    """
    log_probs = F.log_softmax(logits, dim=1)
    per_row = -log_probs.gather(1, positive_column.unsqueeze(1)).squeeze(1)
    if label_smoothing > 0:
        valid = logits > MASKED_LOGIT / 2
        uniform = -(log_probs * valid).sum(dim=1) / valid.sum(dim=1)
        per_row = (1.0 - label_smoothing) * per_row + label_smoothing * uniform
    if sample_weight is None:
        return per_row.mean()
    return (per_row * sample_weight).sum() / sample_weight.sum().clamp(min=1e-12)
