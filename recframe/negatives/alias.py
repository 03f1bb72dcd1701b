"""Vose's alias method: O(1) weighted draws with replacement."""

from __future__ import annotations

import numpy as np


class AliasTable:
    """Vose's alias method: draws item ``i`` with probability ``weights[i] / sum(weights)``.

    Column ``j`` of the table (picked uniformly) keeps ``j`` with probability ``prob[j]`` and
    otherwise returns ``alias[j]``. The build is vectorized: each round pairs *every* current
    small column (scaled weight < 1) with a large one by laying deficits and surpluses end to
    end (cumulative sums); a large column that gives more than its surplus becomes small for
    the next round. Two rounds suffice in exact arithmetic (a few more absorb rounding), so the
    build is O(n) apart from constant-count passes.

    Args:
        weights: (n,) finite, non-negative, sum > 0.
    Attributes:
        probabilities: (n,) float64 normalized weights.
        prob: (n,) float64 probability that a column keeps its own item.
        alias: (n,) int64 item returned otherwise.
    """

    def __init__(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size == 0:
            raise ValueError("AliasTable: no weights (empty pool)")
        if not np.all(np.isfinite(w)):
            raise ValueError("AliasTable: weights must be finite")
        if np.any(w < 0):
            raise ValueError("AliasTable: weights must be >= 0")
        total = float(w.sum())
        if not total > 0:
            raise ValueError("AliasTable: weights must not all be zero")
        n = w.size
        self.probabilities = w / total
        scaled = self.probabilities * n
        prob = np.ones(n, dtype=np.float64)
        alias = np.arange(n, dtype=np.int64)
        small = np.flatnonzero(scaled < 1.0)
        large = np.flatnonzero(scaled >= 1.0)
        for _ in range(64):  # 2 rounds in exact arithmetic; the cap guards against float loops
            if small.size == 0 or large.size == 0:
                break
            deficit = 1.0 - scaled[small]
            surplus = scaled[large] - 1.0
            start = np.cumsum(deficit) - deficit  # where each small's deficit begins
            ends = np.cumsum(surplus)
            owner = np.minimum(np.searchsorted(ends, start, side="right"), large.size - 1)
            prob[small] = scaled[small]
            alias[small] = large[owner]
            scaled[large] -= np.bincount(owner, weights=deficit, minlength=large.size)
            became_small = scaled[large] < 1.0
            small, large = large[became_small], large[~became_small]
        # Leftovers are rounding residue (scaled ~ 1): they keep their own item.
        prob[small] = 1.0
        prob[large] = 1.0
        self.prob = np.clip(prob, 0.0, 1.0)
        self.alias = alias

    def __len__(self) -> int:
        return self.prob.size

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) int64 item indices, drawn with replacement; O(1) per draw."""
        column = rng.integers(0, self.prob.size, size=int(n), dtype=np.int64)
        keep = rng.random(int(n)) < self.prob[column]
        return np.where(keep, column, self.alias[column])

    def implied_probabilities(self) -> np.ndarray:
        """(n,) probability of each item implied by (prob, alias); equals ``probabilities``."""
        n = self.prob.size
        own = self.prob / n
        given = np.bincount(self.alias, weights=(1.0 - self.prob) / n, minlength=n)
        return own + given
