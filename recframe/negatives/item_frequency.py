"""Item frequencies among the training rows, for logQ correction."""

from __future__ import annotations

import numpy as np

from recframe.features.hashing import item_keys


class ItemFrequency:
    """log q(item) = log(count(item) / total) over the training rows.

    Built from the (N,) item ids of the training data; :meth:`log_q` looks up any (B,)
    keys, vectorized. An item never seen in training gets count 1 (it is at least as
    rare as the rarest seen item).
    """

    def __init__(self, keys: np.ndarray, counts: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.counts = counts[order].astype(np.float64)
        self.total = float(self.counts.sum())

    @classmethod
    def from_item_ids(cls, item_ids) -> "ItemFrequency":
        """Count the ids of a training column (Arrow array, ChunkedArray or NumPy)."""
        keys, counts = np.unique(item_keys(item_ids), return_counts=True)
        return cls(keys, counts)

    def count_of(self, keys: np.ndarray) -> np.ndarray:
        """(B,) int64 training count of each key (0 for an item never seen in training)."""
        if not len(self.keys):
            return np.zeros(len(keys), dtype=np.int64)
        pos = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.counts[pos], 0).astype(np.int64)

    def log_q(self, keys: np.ndarray) -> np.ndarray:
        """(B,) float32 log-frequency of each key."""
        pos = np.clip(np.searchsorted(self.keys, keys), 0, max(len(self.keys) - 1, 0))
        found = self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), bool)
        counts = np.where(found, self.counts[pos] if len(self.keys) else 1.0, 1.0)
        return np.log(counts / max(self.total, 1.0)).astype(np.float32)
