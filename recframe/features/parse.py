"""Turning a chunk of rows (Arrow) into a :class:`~recframe.batch.Batch`."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import Batch, SparseIds
from recframe.features.base import DENSE, SEQUENCE, SPARSE, Feature
from recframe.features.columns import FeatureInputError
from recframe.features.hashing import item_keys
from recframe.features.item_frequency import ItemFrequency


class BatchParser:
    """Parses the columns of one chunk of rows into a Batch.

    Args:
        features: the features to parse (each reads its ``input_name`` column).
        label_fields: float label columns, copied to ``batch.labels``.
        sample_weight_field: optional per-row weight column.
        item_id_field: column of each row's item id -> ``batch.item_key``.
        item_frequency: when given, ``batch.item_log_q`` is filled from it.
        list_fields: list columns of item ids kept as jagged item keys in
            ``batch.extra[name] = (values (M,) int64, offsets (B + 1,) int64)``
            (e.g. the items excluded from evaluation).
        item_features: the features (among ``features``) of the item tower. With a
            ``sampler`` they are parsed over the positives followed by the sampled items.
        sampler: a negative sampler (recframe.data.samplers); it draws with the ``rng``
            given to ``__call__``.
        in_batch_negative: whether the model also uses in-batch negatives (for the mixture
            probability of the logQ correction).
        logq: fill ``batch.item_log_q`` (needs ``item_frequency`` for in-batch negatives);
            default: whether ``item_frequency`` is given.
        in_batch_ranks: ranks whose positives are in-batch candidates (the world size with
            train_config.global_in_batch_negative, else 1), for the mixture probability.
        exclude_negatives_field: list column of item ids that are never the row's negatives
            -> ``batch.excluded_negatives`` (item keys, jagged).
    """

    def __init__(
        self,
        features: Sequence[Feature],
        label_fields: Iterable[str] = (),
        sample_weight_field: str | None = None,
        item_id_field: str | None = None,
        item_frequency: ItemFrequency | None = None,
        list_fields: Iterable[str] = (),
        item_features: Sequence[Feature] = (),
        sampler: Any = None,
        in_batch_negative: bool = True,
        logq: bool | None = None,
        in_batch_ranks: int = 1,
        exclude_negatives_field: str | None = None,
    ) -> None:
        self.features = list(features)
        self.label_fields = list(label_fields)
        self.sample_weight_field = sample_weight_field or None
        self.item_id_field = item_id_field or None
        self.item_frequency = item_frequency
        self.list_fields = list(list_fields)
        self.item_feature_names = {f.name for f in item_features}
        self.sampler = sampler
        self.in_batch_negative = in_batch_negative
        self.in_batch_ranks = in_batch_ranks
        self.exclude_negatives_field = exclude_negatives_field or None
        self.logq = item_frequency is not None if logq is None else logq
        # The DataLoader dataset passes a per-batch rng to parsers that draw samples.
        self.wants_rng = sampler is not None

    def columns(self) -> list[str]:
        """Every input column the parser reads, each once, in a stable order."""
        names = [f.input_name for f in self.features] + self.label_fields + self.list_fields
        names += [n for n in (self.sample_weight_field, self.item_id_field, self.exclude_negatives_field) if n]
        user_id_field = getattr(getattr(self.sampler, "config", None), "user_id_field", "")
        if user_id_field:
            names.append(user_id_field)
        return list(dict.fromkeys(names))

    def __call__(self, table: pa.Table | pa.RecordBatch, source: str = "",
                 rng: np.random.Generator | None = None) -> Batch:
        present = set(table.column_names)
        missing = [c for c in self.columns() if c not in present]
        if missing:
            raise FeatureInputError(
                f"{source}: missing column(s) {missing}; available: {table.column_names}"
            )
        batch = Batch(batch_size=table.num_rows)
        sampled = item_table = None
        if self.sampler is not None:
            sampled = self.sampler.sample(table, rng if rng is not None else np.random.default_rng())
            item_table = self._items_with_negatives(table, sampled, source)
        outputs = {SPARSE: batch.sparse, DENSE: batch.dense, SEQUENCE: batch.sequence}
        for feature in self.features:
            rows = item_table if item_table is not None and feature.name in self.item_feature_names else table
            outputs[feature.kind][feature.name] = feature.parse(rows.column(feature.input_name), source)
        for name in self.label_fields:
            batch.labels[name] = self._floats(table, name, source)
        if self.sample_weight_field:
            batch.sample_weight = self._floats(table, self.sample_weight_field, source)
        if self.item_id_field:
            keys = self._item_keys(table.column(self.item_id_field), self.item_id_field, source)
            if sampled is None:
                batch.item_key = torch.from_numpy(keys)
                if self.logq:
                    batch.item_log_q = torch.from_numpy(self.item_frequency.log_q(keys))
            else:
                self._add_negatives(batch, keys, sampled)
        for name in self.list_fields:
            batch.extra[name] = self._jagged_keys(table.column(name), name, source)
        if self.exclude_negatives_field:
            keys, offsets = self._jagged_keys(table.column(self.exclude_negatives_field),
                                              self.exclude_negatives_field, source)
            batch.excluded_negatives = SparseIds(torch.from_numpy(keys), torch.from_numpy(offsets))
        return batch

    def _items_with_negatives(self, table, sampled, source: str) -> pa.Table:
        """The item-side columns of the positives followed by the sampled items' rows."""
        columns = list(dict.fromkeys(f.input_name for f in self.features if f.name in self.item_feature_names))
        positives = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
        parts = [positives.select(columns)]
        for part in (sampled.shared_table, sampled.row_table):
            if part is not None and part.num_rows:
                try:
                    parts.append(part.select(columns).cast(parts[0].schema))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError) as e:
                    raise FeatureInputError(f"{source}: sampled item rows do not match the batch's item columns: {e}") from None
        return pa.concat_tables(parts)

    def _add_negatives(self, batch: Batch, positive_keys: np.ndarray, sampled) -> None:
        """Item keys, log q and per-row ownership of the positives and the sampled items."""
        shared_keys = np.concatenate([positive_keys, sampled.shared_keys])
        batch.item_key = torch.from_numpy(np.concatenate([shared_keys, sampled.row_keys]).astype(np.int64))
        batch.num_shared = sampled.num_shared
        batch.row_negative_row = torch.from_numpy(sampled.row_index.astype(np.int64))
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

    @staticmethod
    def _floats(table: pa.Table | pa.RecordBatch, name: str, source: str) -> torch.Tensor:
        column = table.column(name)
        if column.null_count:
            raise FeatureInputError(f"{source}: column '{name}' has {column.null_count} null values")
        try:
            values = pc.cast(column, pa.float32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise FeatureInputError(f"{source}: column '{name}' must be numeric, got {column.type}") from None
        return torch.from_numpy(np.array(values.to_numpy(zero_copy_only=False), dtype=np.float32))  # a writable copy

    @staticmethod
    def _item_keys(column, name: str, source: str) -> np.ndarray:
        try:
            return item_keys(column)
        except (ValueError, TypeError) as e:
            raise FeatureInputError(f"{source}: column '{name}': {e}") from None

    @classmethod
    def _jagged_keys(cls, column, name: str, source: str) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            raise FeatureInputError(f"{source}: column '{name}' must be a list of item ids, got {column.type}")
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.zeros(len(column) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = pc.list_flatten(column)
        return cls._item_keys(values, name, source), offsets
