"""The negatives' part of parsing a training batch.

:class:`BatchNegatives` is handed to the :class:`~recframe.features.parse.BatchParser` of the
training data. For each batch it draws the sampler's items, puts their rows after the
positives' rows for the item-side features, and fills the batch fields the candidates need:
``item_key`` (positives, then shared, then per-row negatives), ``item_log_q`` (the logQ
correction), ``num_shared``, ``row_negative_row`` / ``row_negative_valid`` and
``excluded_negatives`` (data_config.exclude_negatives_field).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from recframe.batch import Batch, SparseIds
from recframe.features.columns import FeatureInputError
from recframe.features.parse import jagged_item_keys
from recframe.negatives.item_frequency import ItemFrequency
from recframe.negatives.samplers import BaseSampler, SampledItems


class BatchNegatives:
    """Negatives of training batches: sampled items, log q, items never negatives.

    Args:
        sampler: a negative sampler (:mod:`recframe.negatives.samplers`) or None; it draws
            with the ``rng`` given to :meth:`sample`.
        item_frequency: training item counts for the log q of in-batch candidates.
        in_batch_negative: whether the model uses in-batch negatives (for the mixture
            probability of the logQ correction).
        logq: fill ``batch.item_log_q`` (needs ``item_frequency`` for in-batch negatives).
        in_batch_ranks: ranks whose positives are in-batch candidates (the world size with
            train_config.global_in_batch_negative, else 1), for the mixture probability.
        exclude_field: list column of item ids that are never the row's negatives
            -> ``batch.excluded_negatives`` (item keys, jagged).
    """

    def __init__(self, sampler: BaseSampler | None = None, item_frequency: ItemFrequency | None = None,
                 in_batch_negative: bool = True, logq: bool | None = None, in_batch_ranks: int = 1,
                 exclude_field: str | None = None) -> None:
        self.sampler = sampler
        self.item_frequency = item_frequency
        self.in_batch_negative = in_batch_negative
        self.logq = item_frequency is not None if logq is None else logq
        self.in_batch_ranks = in_batch_ranks
        self.exclude_field = exclude_field or None

    def columns(self) -> list[str]:
        """Input columns of the training data this reads (besides the item id)."""
        names = [self.exclude_field] if self.exclude_field else []
        user_id_field = getattr(getattr(self.sampler, "config", None), "user_id_field", "")
        return names + ([user_id_field] if user_id_field else [])

    def sample(self, table: pa.Table | pa.RecordBatch, rng: np.random.Generator | None) -> SampledItems | None:
        """The sampler's items for one batch (None without a sampler)."""
        if self.sampler is None:
            return None
        return self.sampler.sample(table, rng if rng is not None else np.random.default_rng())

    @staticmethod
    def item_rows(table: pa.Table | pa.RecordBatch, sampled: SampledItems, columns: list[str],
                  source: str) -> pa.Table:
        """The item-side ``columns`` of the positives followed by the sampled items' rows."""
        positives = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
        parts = [positives.select(columns)]
        for part in (sampled.shared_table, sampled.row_table):
            if part is not None and part.num_rows:
                try:
                    parts.append(part.select(columns).cast(parts[0].schema))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError) as e:
                    raise FeatureInputError(f"{source}: sampled item rows do not match the batch's item columns: {e}") from None
        return pa.concat_tables(parts)

    def fill(self, batch: Batch, table: pa.Table | pa.RecordBatch, positive_keys: np.ndarray | None,
             sampled: SampledItems | None, source: str) -> None:
        """Set the batch's item keys, log q, sampled-row layout and excluded items."""
        if positive_keys is not None:
            if sampled is None:
                batch.item_key = torch.from_numpy(positive_keys)
                if self.logq:
                    batch.item_log_q = torch.from_numpy(self.item_frequency.log_q(positive_keys))
            else:
                self._add_sampled(batch, positive_keys, sampled)
        if self.exclude_field:
            keys, offsets = jagged_item_keys(table.column(self.exclude_field), self.exclude_field, source)
            longest = int(np.diff(offsets).max()) if len(offsets) > 1 else 0
            batch.excluded_negatives = SparseIds(torch.from_numpy(keys), torch.from_numpy(offsets), longest)

    def _add_sampled(self, batch: Batch, positive_keys: np.ndarray, sampled: SampledItems) -> None:
        """Item keys, log q and per-row ownership of the positives and the sampled items."""
        shared_keys = np.concatenate([positive_keys, sampled.shared_keys])
        batch.item_key = torch.from_numpy(np.concatenate([shared_keys, sampled.row_keys]).astype(np.int64))
        batch.num_shared = sampled.num_shared
        batch.row_negative_row = torch.from_numpy(sampled.row_index.astype(np.int64))
        counts = np.bincount(sampled.row_index, minlength=batch.batch_size)
        batch.row_negative_width = int(counts.max()) if len(counts) else 0
        batch.row_negative_valid = torch.from_numpy(sampled.row_valid.astype(bool))
        if not self.logq:
            return
        # In-batch and shared sampled candidates are one pool of columns: each item's
        # probability of being a column is the mixture of the two sources.
        num_in_batch = len(positive_keys) * self.in_batch_ranks if self.in_batch_negative else 0
        num_sampled = sampled.num_shared
        q = np.zeros(len(shared_keys))
        if num_in_batch:
            q += num_in_batch * np.exp(self.item_frequency.log_q(shared_keys).astype(np.float64))
        if num_sampled:
            q += num_sampled * self.sampler.probability(shared_keys)
        q /= max(num_in_batch + num_sampled, 1)
        if not num_in_batch and not num_sampled:
            # Per-row negatives only (NegativeSamplerV2, no in-batch negatives): the positives
            # take the sampler's q too, as the negatives do; with q = 1 every negative would be
            # boosted by -log q (~log of the pool size) against its positive.
            q = self.sampler.probability(shared_keys).astype(np.float64)
        # An item the sources cannot produce (a positive outside the pool) gets the rarest
        # producible probability instead of log(0).
        floor = q[q > 0].min() if (q > 0).any() else 1.0
        shared_log_q = np.log(np.where(q > 0, q, floor))
        row_q = sampled.row_probability
        row_log_q = np.where(np.isfinite(row_q) & (row_q > 0), np.log(np.where(row_q > 0, row_q, 1.0)), 0.0)
        batch.item_log_q = torch.from_numpy(np.concatenate([shared_log_q, row_log_q]).astype(np.float32))


__all__ = ["BatchNegatives"]
