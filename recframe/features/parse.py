"""Turning a chunk of rows (Arrow) into a :class:`~recframe.batch.Batch`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import Batch
from recframe.features.base import Feature
from recframe.features.columns import FeatureInputError, locate_row
from recframe.features.hashing import item_keys

if TYPE_CHECKING:
    from recframe.negatives.batching import BatchNegatives


class BatchParser:
    """Parses the columns of one chunk of rows into a Batch.

    Args:
        features: the features to parse (each reads its ``input_name`` column).
        label_fields: float label columns, copied to ``batch.labels``.
        sample_weight_field: optional per-row weight column.
        item_id_field: column of each row's item id -> ``batch.item_key``.
        list_fields: list columns of item ids kept as jagged item keys in
            ``batch.extra[name] = (values (M,) int64, offsets (B + 1,) int64)``
            (e.g. the items excluded from evaluation).
        item_features: the features (among ``features``) of the item tower. With a sampler
            in ``negatives`` they are parsed over the positives followed by the sampled items.
        label_bounds: {label column: (low, high)} the values must lie in (e.g. (0, 1) for the
            label a binary cross-entropy reads).

    Labels and weights must be finite (and weights >= 0, not all 0 in a batch); a row that
    breaks a rule is a :class:`FeatureInputError` naming the column and the row.
        negatives: the negatives of training batches
            (:class:`~recframe.negatives.batching.BatchNegatives`): sampled items, log q,
            items that are never a row's negatives.
    """

    def __init__(
        self,
        features: Sequence[Feature],
        label_fields: Iterable[str] = (),
        sample_weight_field: str | None = None,
        item_id_field: str | None = None,
        list_fields: Iterable[str] = (),
        item_features: Sequence[Feature] = (),
        negatives: BatchNegatives | None = None,
        label_bounds: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.features = list(features)
        self.label_fields = list(label_fields)
        self.sample_weight_field = sample_weight_field or None
        self.item_id_field = item_id_field or None
        self.list_fields = list(list_fields)
        self.item_feature_names = {f.name for f in item_features}
        self.negatives = negatives
        self.label_bounds = dict(label_bounds or {})
        # The DataLoader dataset passes a per-batch rng to parsers that draw samples.
        self.wants_rng = negatives is not None and negatives.sampler is not None
        self._columns = self.columns()

    def columns(self) -> list[str]:
        """Every input column the parser reads, each once, in a stable order."""
        names = [f.input_name for f in self.features] + self.label_fields + self.list_fields
        names += [n for n in (self.sample_weight_field, self.item_id_field) if n]
        if self.negatives is not None:
            names += self.negatives.columns()
        return list(dict.fromkeys(names))

    def __call__(self, table: pa.Table | pa.RecordBatch, source: str = "",
                 rng: np.random.Generator | None = None) -> Batch:
        present = set(table.column_names)
        missing = [c for c in self._columns if c not in present]
        if missing:
            raise FeatureInputError(
                f"{source}: missing column(s) {missing}; available: {table.column_names}"
            )
        batch = Batch(batch_size=table.num_rows)
        sampled = self.negatives.sample(table, rng) if self.negatives is not None else None
        item_table = None
        if sampled is not None:
            columns = list(dict.fromkeys(f.input_name for f in self.features if f.name in self.item_feature_names))
            item_table = self.negatives.item_rows(table, sampled, columns, source)
        for feature in self.features:
            rows = item_table if item_table is not None and feature.name in self.item_feature_names else table
            batch.slot(feature.kind)[feature.name] = feature.parse(rows.column(feature.input_name), source)
        for name in self.label_fields:
            batch.labels[name] = self._floats(table, name, source, self.label_bounds.get(name))
        if self.sample_weight_field:
            weights = self._floats(table, self.sample_weight_field, source, (0.0, float("inf")))
            if len(weights) and not bool((weights > 0).any()):
                raise FeatureInputError(f"{source}: column '{self.sample_weight_field}': every sample weight of the "
                                        f"{len(weights)} rows is 0 (the batch would train nothing); expected "
                                        "weights > 0 for the rows to learn from")
            batch.sample_weight = weights
        keys = None
        if self.item_id_field:
            keys = _item_keys(table.column(self.item_id_field), self.item_id_field, source)
        if self.negatives is not None:
            self.negatives.fill(batch, table, keys, sampled, source)
        elif keys is not None:
            batch.item_key = torch.from_numpy(keys)
        for name in self.list_fields:
            batch.extra[name] = jagged_item_keys(table.column(name), name, source)
        return batch

    @staticmethod
    def _floats(table: pa.Table | pa.RecordBatch, name: str, source: str,
                bounds: tuple[float, float] | None = None) -> torch.Tensor:
        column = table.column(name)
        if column.null_count:
            raise FeatureInputError(f"{source}: column '{name}' has {column.null_count} null values")
        try:
            values = pc.cast(column, pa.float32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise FeatureInputError(f"{source}: column '{name}' must be numeric, got {column.type}") from None
        out = np.array(values.to_numpy(zero_copy_only=False), dtype=np.float32)  # a writable copy
        finite = np.isfinite(out)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise FeatureInputError(f"{source}: column '{name}': {int((~finite).sum())} non-finite value(s), first "
                                    f"{out[row]} at {locate_row(source, row)}; expected finite numbers")
        if bounds is not None:
            low, high = bounds
            outside = (out < low) | (out > high)
            if outside.any():
                row = int(np.flatnonzero(outside)[0])
                expected = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}]"
                raise FeatureInputError(f"{source}: column '{name}': {int(outside.sum())} value(s) outside the "
                                        f"expected range, first {out[row]:g} at {locate_row(source, row)}; expected "
                                        f"values {expected}")
        return torch.from_numpy(out)


def _item_keys(column, name: str, source: str) -> np.ndarray:
    try:
        return item_keys(column)
    except (ValueError, TypeError) as e:
        raise FeatureInputError(f"{source}: column '{name}': {e}") from None


def jagged_item_keys(column, name: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Item keys (M,) int64 and offsets (B + 1,) int64 of a list column of item ids."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise FeatureInputError(f"{source}: column '{name}' must be a list of item ids, got {column.type}")
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(column) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pc.list_flatten(column)
    return _item_keys(values, name, source), offsets
