"""Frequency weighting of a sampler's item pool: the presets of ``frequency_weighting``.

Every preset maps the (N,) training counts of the pool items to (N,) non-negative weights; the
sampler draws item i with probability ``weight_i / sum(weight)``. ``count`` is the item's number
of training rows, 1 for a pool item never seen in training (as rare as the rarest seen item,
the convention of :class:`~recframe.negatives.item_frequency.ItemFrequency`), so every pool item
stays reachable; ``total`` is the number of training rows.

- ``COUNT_POWER``: ``count ** alpha`` (``alpha = 0``: uniform; ``0.75``: the negative-sampling
  distribution of word2vec, Mikolov et al. 2013).
- ``LOG_COUNT``: ``log(1 + count)``, popularity damped by a logarithm.
- ``LOG_UNIFORM_RANK``: the log-uniform (Zipfian) distribution over the popularity rank of
  RALM's user-representation learning (Liu et al., "Real-time Attention Based Look-alike Model
  for Recommender System", KDD 2019) and of TensorFlow's ``log_uniform_candidate_sampler``:
  the item of rank k (0 = most frequent, ``N`` = pool size) gets
  ``(log(k + 2) - log(k + 1)) / log(N + 1)``. Items of equal count share the mass of their
  block of ranks equally (the ranks of a tie are otherwise arbitrary), so the result does not
  depend on the pool's row order; the probabilities still sum to 1.
- ``WORD2VEC_SUBSAMPLING``: word2vec's subsampling of frequent words applied to items (the
  keep probability of the reference ``word2vec.c``): ``f = count / total``,
  ``keep = min(1, sqrt(t / f) + t / f)`` with ``t = subsampling_threshold``, and
  ``weight = count * keep``: the training-row distribution after subsampling. Items with
  ``f <= t (3 + sqrt(5)) / 2 ~= 2.618 t`` keep their count; above, the weight is
  ``sqrt(t * total * count) + t * total``, about the square root of the count.
"""

from __future__ import annotations

import numpy as np

from recframe.protos import sampler_pb2

COUNT_POWER = sampler_pb2.COUNT_POWER
LOG_COUNT = sampler_pb2.LOG_COUNT
LOG_UNIFORM_RANK = sampler_pb2.LOG_UNIFORM_RANK
WORD2VEC_SUBSAMPLING = sampler_pb2.WORD2VEC_SUBSAMPLING

__all__ = ["COUNT_POWER", "LOG_COUNT", "LOG_UNIFORM_RANK", "WORD2VEC_SUBSAMPLING", "frequency_weights",
           "preset_name"]


def preset_name(preset: int) -> str:
    """The enum value name of a ``FrequencyWeighting`` number."""
    return sampler_pb2.FrequencyWeighting.Name(preset)


def frequency_weights(counts: np.ndarray, total: float, preset: int = COUNT_POWER, *, alpha: float = 0.0,
                      threshold: float = 1e-3) -> np.ndarray:
    """(N,) float64 weights of pool items with training ``counts`` (>= 1 each; see the module).

    ``total``: the number of training rows (WORD2VEC_SUBSAMPLING's denominator of f);
    ``alpha``: COUNT_POWER's exponent; ``threshold``: WORD2VEC_SUBSAMPLING's t.
    """
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    if preset == COUNT_POWER:
        return counts ** float(alpha)
    if preset == LOG_COUNT:
        return np.log1p(counts)
    if preset == LOG_UNIFORM_RANK:
        n = counts.size
        order = np.argsort(-counts, kind="stable")
        ordered = counts[order]
        begins = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[begins[1:], n]
        # mass of the ranks [a, b): sum_{k=a}^{b-1} log((k+2)/(k+1)) = log(b+1) - log(a+1)
        block = (np.log1p(ends) - np.log1p(begins)) / np.log1p(n) / (ends - begins)
        weights = np.empty(n, dtype=np.float64)
        weights[order] = np.repeat(block, ends - begins)
        return weights
    if preset == WORD2VEC_SUBSAMPLING:
        ratio = float(threshold) / (counts / max(float(total), 1.0))  # t / f
        return counts * np.minimum(1.0, np.sqrt(ratio) + ratio)
    raise ValueError(f"unknown frequency_weighting {preset!r}")
