"""Softmax cross-entropy of each row's positive against its candidates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recframe.config.report import UNIT_RIGHT_OPEN
from recframe.losses.base import LISTWISE, Loss
from recframe.negatives.candidates import ScoredBatch, masked_logit
from recframe.registry import LOSSES


def softmax_cross_entropy(logits: torch.Tensor, positive_column: torch.Tensor,
                          sample_weight: torch.Tensor | None = None,
                          label_smoothing: float = 0.0, masked: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean over rows of -sum_c target_c * log_softmax(logits)_c.

    The target is (1 - label_smoothing) on the positive plus label_smoothing spread
    uniformly over the row's unmasked candidates (masked ones get no target mass).

    Args:
        logits: (B, C), masked entries equal to ``masked_logit(logits.dtype)``.
        positive_column: (B,) index of each row's positive.
        sample_weight: (B,) or None.
        masked: (B, C) bool, True at the masked entries; default: the entries at or below
            half the masked logit.
    Returns:
        scalar loss.
    """
    log_probs = F.log_softmax(logits, dim=1)
    per_row = -log_probs.gather(1, positive_column.unsqueeze(1)).squeeze(1)
    if label_smoothing > 0:
        valid = ~masked if masked is not None else logits > masked_logit(logits.dtype) / 2
        uniform = -(log_probs * valid).sum(dim=1) / valid.sum(dim=1)
        per_row = (1.0 - label_smoothing) * per_row + label_smoothing * uniform
    if sample_weight is None:
        return per_row.mean()
    return (per_row * sample_weight).sum() / sample_weight.sum().clamp(min=1e-12)


@LOSSES.register()
class SoftmaxCrossEntropy(Loss):
    """Listwise softmax over each row's candidates (logQ-corrected when the model asks).

    Input: a ScoredBatch. Output: the weighted mean over rows of the cross-entropy of the
    row's positive column (:func:`softmax_cross_entropy`).
    """

    kind = LISTWISE
    config_ranges = {"label_smoothing": UNIT_RIGHT_OPEN}

    @classmethod
    def check_config(cls, message, path, ctx) -> None:
        ctx.require_item_id(f"{ctx.loss_name(cls)} ({path}) to mask accidental hits")
        model, model_path = ctx.model_message, ctx.model_path
        if model is not None and not model.in_batch_negative and ctx.config.data_config.WhichOneof("sampler") is None:
            ctx.add(f"{model_path}.in_batch_negative",
                    f"false with {ctx.loss_name(cls)} ({path}) and no data_config sampler, expected true "
                    "or a negative sampler (the softmax would have no negatives)")

    def forward(self, scored: ScoredBatch) -> torch.Tensor:
        candidates = scored.candidates
        return softmax_cross_entropy(candidates.logits(), candidates.positive_column, scored.sample_weight,
                                     self.config.label_smoothing, masked=candidates.masked)


__all__ = ["SoftmaxCrossEntropy", "softmax_cross_entropy"]
