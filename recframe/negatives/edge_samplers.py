"""Samplers that read a (user id, item id) edge table besides the item pool.

- :class:`NegativeSamplerV2`: per-row negatives that avoid the row user's positive edges;
- :class:`HardNegativeSampler`: shared negatives plus the row user's hard negatives.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from recframe.data.inputs import DataError
from recframe.negatives.samplers import BaseSampler, SampledItems, empty_f64, empty_i64
from recframe.negatives.tables import examples, first_of_each, group_sum, lookup, pair_hash
from recframe.registry import SAMPLERS

logger = logging.getLogger(__name__)


@SAMPLERS.register()
class NegativeSamplerV2(BaseSampler):
    """``num_sample`` negatives per row, never an item the row's user has a positive edge with.

    Positive edges: the (user_id_field, item_id_field) rows of ``edge_input_path``, kept as a
    sorted array of 64-bit (user, item) pair hashes; membership is a vectorized searchsorted.
    Each row's draws follow q; a draw that is a positive of the row's user is redrawn, up to
    ``max_retries`` times. **Fallback**: a draw still conflicting after that (a user positive on
    almost all of the pool's mass) is returned with ``row_valid = False`` and must be masked out
    of the loss; it holds the last (positive) draw and its q.

    ``row_probability`` of a valid draw is the exact probability of that draw given that it is
    valid: ``q(item) / (1 - m_u)``, with ``m_u`` the pool mass of the user's positives (the
    retries cancel out: the i-th retry multiplies every valid item's chance by ``m_u``).
    Users absent from the edge table have ``m_u = 0``. The row's own target item is *not*
    excluded unless it is one of the user's edges (accidental hits are masked by the loss).
    Returns R = B * num_sample per-row items, no shared ones.
    """


    @classmethod
    def config_problems(cls, message, path, default_item_id_field=""):
        return super().config_problems(message, path, default_item_id_field) + cls.edge_problems(
            message, path, "edge_input_path")

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.max_retries = int(config.max_retries)
        users, items, _, where = self._read_edges(config.edge_input_path, "edge_input_path")
        rows, found = self.pool_rows(items)
        if not found.any():
            raise DataError(f"{where}: none of its items is in the {self.pool_source}")
        hashes = pair_hash(users, items)
        first = first_of_each(hashes)  # one edge per distinct (user, item)
        self._positive_pairs = np.sort(hashes[first])
        # pool mass of each user's positives (duplicate edges counted once)
        first = first[found[first]]
        self._mass_users, self._mass = group_sum(users[first], self.pool_probability[rows[first]])
        logger.info("%s: %d positive edges of %d users", where, self._positive_pairs.size,
                    first_of_each(users).size)

    def is_positive(self, user_keys: np.ndarray, item_keys_: np.ndarray) -> np.ndarray:
        """(n,) bool: (user, item) is a positive edge (up to 64-bit hash collisions)."""
        _, found = lookup(self._positive_pairs, pair_hash(user_keys, item_keys_))
        return found

    def positive_mass(self, user_keys: np.ndarray) -> np.ndarray:
        """(n,) float64 pool probability mass of each user's positive items."""
        pos, found = lookup(self._mass_users, np.asarray(user_keys, np.int64))
        return np.where(found, self._mass[pos] if pos.size else 0.0, 0.0)

    def sample(self, batch: pa.Table | pa.RecordBatch, rng: np.random.Generator) -> SampledItems:
        users = self._batch_users(batch)
        row_index = np.repeat(np.arange(users.size, dtype=np.int64), self.num_sample)
        row_users = users[row_index]
        idx = self.alias.draw(row_index.size, rng)
        conflict = np.flatnonzero(self.is_positive(row_users, self.pool_keys[idx]))
        for _ in range(self.max_retries):
            if conflict.size == 0:
                break
            idx[conflict] = self.alias.draw(conflict.size, rng)
            conflict = conflict[self.is_positive(row_users[conflict], self.pool_keys[idx[conflict]])]
        valid = np.ones(idx.size, dtype=bool)
        valid[conflict] = False
        q = self.pool_probability[idx]
        rest = 1.0 - self.positive_mass(row_users)
        prob = np.where(valid, q / np.maximum(rest, np.finfo(np.float64).tiny), q)
        empty = self.pool_table.slice(0, 0)
        return SampledItems(None, empty_i64(), empty_f64(), self.pool_table.take(idx) if idx.size else empty,
                            row_index, self.pool_keys[idx], prob, valid)


@SAMPLERS.register()
class HardNegativeSampler(BaseSampler):
    """Shared negatives as :class:`NegativeSampler` plus per-row hard negatives.

    Hard negatives: the (user_id_field, item_id_field) rows of ``hard_neg_edge_input_path``
    (duplicate pairs counted once); every item must be in the pool (else a DataError naming the
    file, the count and examples). Each row gets all of its user's hard negatives when there are
    at most ``num_hard_sample``, else a uniformly random subset of ``num_hard_sample`` (drawn from
    ``rng``, without replacement); a row whose user has none gets none. ``row_probability`` is
    NaN (not sampled: no logQ correction), ``row_valid`` True. Cost per batch: O(T log T) with T
    the total hard negatives of the batch's users.
    """


    @classmethod
    def config_problems(cls, message, path, default_item_id_field=""):
        problems = super().config_problems(message, path, default_item_id_field)
        problems += cls.edge_problems(message, path, "hard_neg_edge_input_path")
        if message.num_hard_sample < 1:
            problems.append((f"{path}.num_hard_sample", f"got {message.num_hard_sample}, expected >= 1"))
        return problems

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.num_hard_sample = int(config.num_hard_sample)
        users, items, ids, where = self._read_edges(config.hard_neg_edge_input_path, "hard_neg_edge_input_path")
        rows, found = self.pool_rows(items)
        if not found.all():
            missing = np.flatnonzero(~found)
            raise DataError(f"{where}: {missing.size} hard-negative item(s) are not in the {self.pool_source}: "
                            f"{examples(ids, missing)}; expected every hard negative in the pool")
        first = first_of_each(pair_hash(users, rows))  # one row per distinct (user, item)
        first = first[np.argsort(users[first], kind="stable")]  # grouped by user, file order within
        self._hard_users = users[first]
        # per distinct user: first position and number of hard negatives
        begins = np.flatnonzero(np.r_[True, self._hard_users[1:] != self._hard_users[:-1]])
        self._user_keys = self._hard_users[begins]
        self._user_start = begins.astype(np.int64)
        self._user_count = np.diff(np.r_[begins, self._hard_users.size]).astype(np.int64)
        self._hard_rows = rows[first]
        logger.info("%s: %d hard negatives of %d users", where, first.size, first_of_each(users).size)

    def hard_items(self, user_key: int) -> np.ndarray:
        """Pool rows of one user's hard negatives (in edge-table order, duplicates dropped)."""
        start, count = self._ranges(np.array([user_key], dtype=np.int64))
        return self._hard_rows[start[0]:start[0] + count[0]]

    def _ranges(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first position, count) of each user's hard negatives; count 0 when none."""
        pos, found = lookup(self._user_keys, users)
        return self._user_start[pos], np.where(found, self._user_count[pos], 0)

    def sample(self, batch: pa.Table | pa.RecordBatch, rng: np.random.Generator) -> SampledItems:
        shared_table, shared_keys, shared_prob = self._shared(rng)
        users = self._batch_users(batch)
        start, count = self._ranges(users)
        total = int(count.sum())
        offsets = np.cumsum(count) - count
        row_of = np.repeat(np.arange(users.size, dtype=np.int64), count)
        within = np.arange(total, dtype=np.int64) - offsets[row_of]
        candidate = start[row_of] + within
        if np.any(count > self.num_hard_sample):  # random subset: sort by (row, random key)
            order = np.argsort(row_of + rng.random(total))  # row + [0, 1): rows stay grouped
            candidate = candidate[order]  # row_of is unchanged by a sort within rows
        keep = within < self.num_hard_sample
        row_index, rows = row_of[keep], self._hard_rows[candidate[keep]]
        return SampledItems(
            shared_table, shared_keys, shared_prob,
            self.pool_table.take(rows), row_index, self.pool_keys[rows],
            np.full(rows.size, np.nan), np.ones(rows.size, dtype=bool),
        )


__all__ = ["HardNegativeSampler", "NegativeSamplerV2"]
