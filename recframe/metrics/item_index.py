"""Item ids -> rows of the item embedding table, for targets and exclusions."""

from __future__ import annotations

import numpy as np


class ItemIndex:
    """Maps item ids (keys) to rows of the item embedding table.

    Policy: unknown target ids are an error (a target outside the catalogue cannot be
    scored, so the metric would be silently wrong); unknown excluded ids are dropped
    (they cannot be recommended anyway).

    Args:
        item_keys: (N,) int64 distinct item ids; row ``i`` of the item table is
            ``item_keys[i]``.
    """

    def __init__(self, item_keys: np.ndarray) -> None:
        keys = np.asarray(item_keys)
        if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
            raise ValueError(f"item_keys must be a 1-D integer array, got {keys.dtype} {keys.shape}")
        keys = keys.astype(np.int64, copy=False)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        duplicated = self._sorted[1:][self._sorted[1:] == self._sorted[:-1]]
        if duplicated.size:
            raise ValueError(
                f"item_keys has {np.unique(duplicated).size} duplicated ids, "
                f"e.g. {np.unique(duplicated)[:5].tolist()}"
            )

    def __len__(self) -> int:
        return int(self._sorted.size)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rows of ``keys`` (any shape) as int64 of the same shape; unknown ids -> -1."""
        keys = np.asarray(keys, dtype=np.int64)
        if self._sorted.size == 0:
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._sorted, keys), 0, self._sorted.size - 1)
        return np.where(self._sorted[pos] == keys, self._order[pos], -1).astype(np.int64)

    def lookup_targets(self, keys: np.ndarray) -> np.ndarray:
        """Rows of target ids; raises ValueError naming the count and examples of unknown ids."""
        keys = np.asarray(keys, dtype=np.int64)
        rows = self.lookup(keys)
        unknown = keys[rows < 0]
        if unknown.size:
            raise ValueError(
                f"{unknown.size} of {keys.size} target item ids are not in the item catalogue "
                f"({len(self)} items), e.g. {np.unique(unknown)[:5].tolist()}"
            )
        return rows

    def lookup_exclude(self, values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of jagged excluded ids, unknown ids dropped.

        Args:
            values: (M,) item ids; offsets: (Q + 1,) their offsets.

        Returns:
            ``(rows (M',), offsets (Q + 1,))`` int64.
        """
        values = np.asarray(values, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        rows = self.lookup(values)
        known = rows >= 0
        kept_before = np.concatenate([[0], np.cumsum(known)])
        return rows[known], kept_before[offsets].astype(np.int64)


__all__ = ["ItemIndex"]
