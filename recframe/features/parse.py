"""Turning a chunk of rows (Arrow) into a :class:`~recframe.batch.Batch`."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import Batch
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
    """

    def __init__(
        self,
        features: Sequence[Feature],
        label_fields: Iterable[str] = (),
        sample_weight_field: str | None = None,
        item_id_field: str | None = None,
        item_frequency: ItemFrequency | None = None,
        list_fields: Iterable[str] = (),
    ) -> None:
        self.features = list(features)
        self.label_fields = list(label_fields)
        self.sample_weight_field = sample_weight_field or None
        self.item_id_field = item_id_field or None
        self.item_frequency = item_frequency
        self.list_fields = list(list_fields)

    def columns(self) -> list[str]:
        """Every input column the parser reads, each once, in a stable order."""
        names = [f.input_name for f in self.features] + self.label_fields + self.list_fields
        names += [n for n in (self.sample_weight_field, self.item_id_field) if n]
        return list(dict.fromkeys(names))

    def __call__(self, table: pa.Table | pa.RecordBatch, source: str = "") -> Batch:
        present = set(table.column_names)
        missing = [c for c in self.columns() if c not in present]
        if missing:
            raise FeatureInputError(
                f"{source}: missing column(s) {missing}; available: {table.column_names}"
            )
        batch = Batch(batch_size=table.num_rows)
        outputs = {SPARSE: batch.sparse, DENSE: batch.dense, SEQUENCE: batch.sequence}
        for feature in self.features:
            outputs[feature.kind][feature.name] = feature.parse(table.column(feature.input_name), source)
        for name in self.label_fields:
            batch.labels[name] = self._floats(table, name, source)
        if self.sample_weight_field:
            batch.sample_weight = self._floats(table, self.sample_weight_field, source)
        if self.item_id_field:
            keys = self._item_keys(table.column(self.item_id_field), self.item_id_field, source)
            batch.item_key = torch.from_numpy(keys)
            if self.item_frequency is not None:
                batch.item_log_q = torch.from_numpy(self.item_frequency.log_q(keys))
        for name in self.list_fields:
            batch.extra[name] = self._jagged_keys(table.column(name), name, source)
        return batch

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
