"""The Batch: every tensor a model step needs, produced by feature parsing.

Shapes (B = rows in the batch):

- ``sparse[name]``: :class:`SparseIds`, jagged ids of an id (or bucketized raw) feature,
  ``values`` (N,) int64 and ``offsets`` (B + 1,) int64 with ``offsets[0] == 0`` and
  ``offsets[-1] == N``; row ``i`` owns ``values[offsets[i]:offsets[i + 1]]`` (may be empty).
- ``dense[name]``: (B, value_dim) float32 values of a raw feature.
- ``sequence[name]``: :class:`SequenceIds`, ``ids`` (B, L) int64 right-padded with 0 and
  ``lengths`` (B,) int64; position ``lengths[i] - 1`` holds row ``i``'s most recent id. A
  sequence_raw_feature gives :class:`SequenceValues` instead: ``values`` (B, L) float32.
- ``labels[name]``: (B,) float32.
- ``sample_weight``: (B,) float32 or None.
- ``item_key``: (N,) int64 identity (see ``features.hashing.item_keys``) of every item row:
  the B positives first, then ``num_shared`` sampled negatives shared by all rows, then the
  per-row negatives; used to mask accidental hits. None when data_config.item_id_field is
  unset. Item-side features are parsed over the same N rows (user-side ones over B).
- ``item_log_q``: (N,) float32 log q of each item row for the logQ correction (in-batch:
  frequency among the training rows; sampled: the sampler's probability; mixed: the
  mixture; hard negatives: 0); None when not requested.
- ``num_shared``: number of shared sampled negatives S.
- ``row_negative_row``: (R,) int64 batch row owning each per-row negative (non-decreasing),
  ``row_negative_valid``: (R,) bool, False for a slot that must be masked (sampler fallback);
  ``row_negative_width``: the most per-row negatives of one row (0 when unknown).
- ``excluded_negatives``: :class:`SparseIds` of item keys (B rows) that are never the row's
  negatives (data_config.exclude_negatives_field); None when not configured.
- ``extra``: non-tensor columns kept for evaluation (e.g. excluded item keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

#: Kinds of parsed feature values, the keys of :meth:`Batch.slot`.
SPARSE = "sparse"
DENSE = "dense"
SEQUENCE = "sequence"


@dataclass
class SparseIds:
    """Jagged ids: ``values`` (N,) int64 and ``offsets`` (B + 1,) int64.

    ``max_length``: the longest row, when the code that built the ids on the host knew it
    (reading it from a CUDA tensor later would wait for the device); None = unknown.
    """

    values: torch.Tensor
    offsets: torch.Tensor
    max_length: int | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "SparseIds":
        return SparseIds(
            self.values.to(device, non_blocking=non_blocking),
            self.offsets.to(device, non_blocking=non_blocking),
            self.max_length,
        )

    def pin_memory(self) -> "SparseIds":
        return SparseIds(self.values.pin_memory(), self.offsets.pin_memory(), self.max_length)

    def lengths(self) -> torch.Tensor:
        """(B,) number of ids per row."""
        return self.offsets[1:] - self.offsets[:-1]

    def longest(self) -> int:
        """The longest row's length (``max_length``, else read from ``offsets``)."""
        if self.max_length is not None:
            return self.max_length
        return int(self.lengths().max()) if self.offsets.numel() > 1 else 0


def jagged_row_ids(offsets: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """(M,) int64 row of every value of a jagged list with ``offsets`` (B + 1,); ``total`` =
    M when the caller knows it (the values' length), which spares reading ``offsets[-1]``
    back from the device."""
    lengths = offsets[1:] - offsets[:-1]
    rows = torch.arange(lengths.numel(), device=offsets.device)
    return torch.repeat_interleave(rows, lengths, output_size=int(offsets[-1]) if total is None else total)


def valid_positions(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool, True at the first ``lengths[i]`` positions of row i."""
    positions = torch.arange(width, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


@dataclass
class SequenceIds:
    """Padded sequence ids: ``ids`` (B, L) int64 (0-padded on the right), ``lengths`` (B,)."""

    ids: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "SequenceIds":
        return SequenceIds(
            self.ids.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "SequenceIds":
        return SequenceIds(self.ids.pin_memory(), self.lengths.pin_memory())

    def mask(self) -> torch.Tensor:
        """(B, L) bool, True at valid positions."""
        return valid_positions(self.lengths, self.ids.shape[1])


@dataclass
class SequenceValues:
    """Padded numbers per position: ``values`` (B, L) float32 (0-padded on the right), ``lengths`` (B,)."""

    values: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "SequenceValues":
        return SequenceValues(
            self.values.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "SequenceValues":
        return SequenceValues(self.values.pin_memory(), self.lengths.pin_memory())

    def mask(self) -> torch.Tensor:
        """(B, L) bool, True at valid positions."""
        return valid_positions(self.lengths, self.values.shape[1])


#: Batch fields that stay on the host (ints, and ``extra``'s Python values).
_HOST_FIELDS = ("batch_size", "num_shared", "row_negative_width", "extra")


@dataclass
class Batch:
    """All model inputs of one batch (see the module docstring for shapes)."""

    batch_size: int
    sparse: dict[str, SparseIds] = field(default_factory=dict)
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    sequence: dict[str, SequenceIds] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    sample_weight: torch.Tensor | None = None
    item_key: torch.Tensor | None = None
    item_log_q: torch.Tensor | None = None
    num_shared: int = 0
    row_negative_row: torch.Tensor | None = None
    row_negative_valid: torch.Tensor | None = None
    row_negative_width: int = 0
    excluded_negatives: SparseIds | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def slot(self, kind: str) -> dict[str, Any]:
        """The dict holding the parsed values of features of ``kind``: ``"sparse"``,
        ``"dense"`` or ``"sequence"`` (a feature class's ``kind``)."""
        return {SPARSE: self.sparse, DENSE: self.dense, SEQUENCE: self.sequence}[kind]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor moved to ``device`` (``extra`` is shared). From pinned
        memory (:meth:`pin_memory`) with ``non_blocking``, the copies do not wait for the device."""
        return self._map(lambda value: value.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """A copy in page-locked host memory (the DataLoader calls it with ``pin_memory``)."""
        return self._map(lambda value: value.pin_memory())

    def _map(self, apply) -> "Batch":
        def move(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return apply(value)

        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kwargs[f.name] = value if f.name in _HOST_FIELDS else move(value)
        return Batch(**kwargs)
