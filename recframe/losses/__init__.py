"""Losses of match models: listwise softmax over candidates, pointwise BCE."""

from recframe.losses.softmax import mask_accidental_hits, softmax_cross_entropy
from recframe.losses.pointwise import binary_cross_entropy, sampled_binary_cross_entropy

__all__ = ["binary_cross_entropy", "mask_accidental_hits", "sampled_binary_cross_entropy", "softmax_cross_entropy"]
