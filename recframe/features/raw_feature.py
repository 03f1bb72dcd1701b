"""RawFeature: floats per row, normalized; bucketized into ids when boundaries are set."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from google.protobuf import json_format

from recframe.batch import DENSE, SPARSE, SparseIds
from recframe.config.report import AT_LEAST_ONE, join_path, show
from recframe.features.base import EmbeddingSpec, Feature, is_list_type, is_number_type, is_string_type
from recframe.features.columns import flatten_column, locate_row
from recframe.protos import feature_pb2
from recframe.registry import FEATURES


def normalize(values: np.ndarray, normalizer: feature_pb2.Normalizer) -> np.ndarray:
    """Apply a configured normalizer elementwise to float32 values."""
    which = normalizer.WhichOneof("normalizer")
    if which == "z_score":
        return (values - normalizer.z_score.mean) / normalizer.z_score.std
    if which == "min_max":
        return (values - normalizer.min_max.min) / (normalizer.min_max.max - normalizer.min_max.min)
    if which == "log1p":
        return np.sign(values) * np.log1p(np.abs(values))
    return values


@FEATURES.register()
class RawFeature(Feature):
    """Numeric feature of ``value_dim`` floats per row.

    Input: (B,) numeric column, list column of value_dim numbers, or a string split by
    ``separator``. Null rows take ``default_value``.
    Output of :meth:`parse`: (B, value_dim) float32 tensor; with ``boundaries``, a
    :class:`SparseIds` of one bucket per row (bucket = number of boundaries <= value).
    """

    config_ranges = {"value_dim": AT_LEAST_ONE}

    @classmethod
    def check_config(cls, message, path, ctx) -> None:
        """Boundaries sorted and finite; bucketizing needs value_dim 1 and embedding_dim."""
        boundaries = list(message.boundaries)
        if not boundaries:
            for name in ("embedding_dim", "embedding_name", "initializer"):
                if message.HasField(name):
                    ctx.add(join_path(path, name), "set without boundaries (it would be ignored), "
                                                   "expected boundaries to bucketize, or no " + name)
            return
        for i, value in enumerate(boundaries):
            if not math.isfinite(value):
                ctx.add(f"{path}.boundaries[{i}]", f"got {show(value)}, expected a finite number")
            elif i > 0 and not value > boundaries[i - 1]:
                ctx.add(f"{path}.boundaries[{i}]", f"got {show(value)} after {show(boundaries[i - 1])}, "
                                                   "expected strictly ascending boundaries")
        if message.value_dim != 1:
            ctx.add(join_path(path, "value_dim"), f"got {message.value_dim} with boundaries, expected 1")
        if message.embedding_dim == 0:
            what = "got 0" if message.HasField("embedding_dim") else "not set"
            ctx.add(join_path(path, "embedding_dim"),
                    f"{what}, expected > 0 with boundaries (a bucketized feature is embedded)")

    def __init__(self, config: feature_pb2.RawFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.value_dim = int(config.value_dim)
        self.boundaries = np.asarray(list(config.boundaries), dtype=np.float32)
        self.kind = SPARSE if len(self.boundaries) else DENSE
        self.pooling = "sum"
        self.embedding = None
        if self.kind == SPARSE:
            self.embedding = EmbeddingSpec.from_config(config, len(self.boundaries) + 1)

    @property
    def output_dim(self) -> int:
        return self.embedding.embedding_dim if self.embedding else self.value_dim

    def table_mapping(self) -> tuple:
        return ("boundaries", *self.boundaries.tolist())

    def tensor_specs(self) -> list[dict]:
        if self.kind == DENSE:
            return [{"name": f"{self.name}.values", "dtype": "float32", "shape": ["B", self.value_dim]}]
        return super().tensor_specs()

    def example_tensors(self, lengths: torch.Tensor, width: int, generator: torch.Generator) -> list[torch.Tensor]:
        if self.kind == DENSE:
            return [torch.rand(len(lengths), self.value_dim, generator=generator)]
        return super().example_tensors(lengths, width, generator)

    def describe(self) -> dict:
        cfg = self.config
        out = {"type": type(self).__name__, "value_dim": self.value_dim, "default_value": cfg.default_value}
        if cfg.HasField("normalizer"):
            out["normalizer"] = json_format.MessageToDict(cfg.normalizer, preserving_proto_field_name=True)
        if len(self.boundaries):
            out["boundaries"] = [float(b) for b in self.boundaries]
        if cfg.separator:
            out["separator"] = cfg.separator
        return out

    def column_type_problem(self, t: pa.DataType) -> str | None:
        ok = (is_number_type(t) or pa.types.is_null(t) or (is_list_type(t) and is_number_type(t.value_type))
              or bool(self.config.separator and is_string_type(t)))
        return None if ok else "numbers" + (" (or a list of numbers)" if self.value_dim > 1 else "")

    def values(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> np.ndarray:
        """(B, value_dim) float32 normalized values."""
        num_rows = len(column)
        flat, row_of = flatten_column(column, self.config.separator or None)
        try:
            # Via float64: a safe int64 -> float32 cast rejects integers beyond 2^24 (e.g. Unix
            # timestamps, the documented sample_time_feature of time_decay_pooling).
            numbers = pc.cast(flat, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise self.error(source, f"expected numbers, got {flat.type} ({e})") from None
        finite = np.isfinite(numbers)
        if not finite.all():
            bad_row = int(row_of[np.flatnonzero(~finite)[0]])
            raise self.error(source, f"{int((~finite).sum())} non-finite value(s), first "
                                     f"{numbers[~finite][0]} at {locate_row(source, bad_row)}; expected finite numbers "
                                     "(leave a value null to use default_value)")
        counts = np.bincount(row_of, minlength=num_rows)
        present = counts > 0
        bad = present & (counts != self.value_dim)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise self.error(
                source, f"row {row} has {int(counts[row])} values, expected value_dim={self.value_dim}"
            )
        out = np.full((num_rows, self.value_dim), self.config.default_value, dtype=np.float32)
        out[present] = numbers.reshape(-1, self.value_dim)
        if self.config.HasField("normalizer"):
            out = normalize(out, self.config.normalizer).astype(np.float32)
        return out

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> torch.Tensor | SparseIds:
        values = self.values(column, source)
        if self.kind == DENSE:
            return torch.from_numpy(values)
        buckets = np.searchsorted(self.boundaries, values[:, 0], side="right").astype(np.int64)
        offsets = np.arange(len(buckets) + 1, dtype=np.int64)
        return SparseIds(torch.from_numpy(buckets), torch.from_numpy(offsets))
