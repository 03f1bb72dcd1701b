"""The Feature base class: everything recframe knows about one kind of feature.

A feature class (registered in :data:`recframe.registry.FEATURES` under the name of its
config message) owns:

- its config rules (:meth:`Feature.check_config`, ``config_ranges``) and the width of its
  vector in a DEEP group (:attr:`Feature.output_dim`, from the built feature);
- how a raw Arrow column becomes a parsed value (:meth:`Feature.parse`): ``SparseIds``
  (kind ``"sparse"``), a (B, value_dim) float tensor (``"dense"``) or padded per-position
  values (``"sequence"``), stored in the Batch slot of its kind;
- its flat tensors for export and serving (:meth:`tensor_specs`, :meth:`to_tensors`,
  :meth:`from_tensors`, :meth:`example_tensors`), the description ``tower.json`` carries
  (:meth:`describe`) and the raw column types serving accepts (:meth:`column_type_problem`).

The defaults below cover the three kinds; a new feature class of an existing kind only
writes its rules, its parse and its description.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import SEQUENCE, SPARSE, SequenceIds, SparseIds
from recframe.config.loader import read_vocab_file
from recframe.config.report import join_path
from recframe.features.columns import FeatureInputError
from recframe.features.hashing import hash_bucket
from recframe.protos import feature_pb2
from recframe.protoutil import oneof_field_name

if TYPE_CHECKING:
    from recframe.config.validator import ConfigContext


@dataclass(frozen=True)
class EmbeddingSpec:
    """Size and layout of the embedding table a categorical feature looks up."""

    name: str
    num_embeddings: int
    embedding_dim: int
    initializer: feature_pb2.Initializer | None

    @classmethod
    def from_config(cls, config: Any, num_embeddings: int) -> "EmbeddingSpec":
        """The table a feature message names (embedding_name, default feature_name)."""
        return cls(
            config.embedding_name or config.feature_name,
            num_embeddings,
            int(config.embedding_dim),
            config.initializer if config.HasField("initializer") else None,
        )


def pooling_name(pooling: int) -> str:
    """"mean" or "sum" for a feature_pb2.Pooling value."""
    return "mean" if pooling == feature_pb2.MEAN else "sum"


def is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_list_type(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def is_number_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def is_id_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or is_string_type(t) or pa.types.is_null(t) or pa.types.is_dictionary(t)


class Feature(ABC):
    """One configured feature: its rules, its parsing and its flat tensors.

    Args:
        config: the feature's config message (IdFeature, RawFeature, ...).
        config_dir: directory of the pipeline config (relative vocab files).

    Class attributes: ``kind`` (``"sparse"``, ``"dense"`` or ``"sequence"``: the Batch slot
    of its parsed value) and ``config_ranges`` (field -> allowed interval, checked wherever
    the message appears).
    """

    kind: ClassVar[str]
    config_ranges: ClassVar[dict] = {}
    #: Width (number of positions) of a sequence feature's padded value; 0 otherwise.
    sequence_length: int = 0
    #: The embedding table it looks up, or None.
    embedding: EmbeddingSpec | None = None

    def __init__(self, config: Any, config_dir: str = "") -> None:
        self.config = config
        self.name: str = config.feature_name
        self.input_name: str = config.input_name or config.feature_name

    # ---- config -------------------------------------------------------------------------

    @classmethod
    def check_config(cls, message: Any, path: str, ctx: "ConfigContext") -> None:
        """Report the problems of one feature message at ``path`` (config validation); a
        feature with no problem is then built and its facts used by the other rules."""

    @classmethod
    def config_field(cls) -> str:
        """The member of FeatureConfig.feature holding this class's message, e.g. "id_feature"."""
        return oneof_field_name(feature_pb2.FeatureConfig.DESCRIPTOR, "feature", cls.__name__)

    def table_mapping(self) -> tuple:
        """How raw values become table rows (features sharing a table must agree on it)."""
        return ()

    @property
    def output_dim(self) -> int:
        """Width of the feature's pooled vector in a DEEP group."""
        return self.embedding.embedding_dim if self.embedding is not None else 0

    # ---- parsing ------------------------------------------------------------------------

    @abstractmethod
    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> Any:
        """Parse the feature's input column of one batch."""

    def error(self, source: str, message: str) -> FeatureInputError:
        where = f"{source}: " if source else ""
        return FeatureInputError(f"{where}feature '{self.name}' (column '{self.input_name}'): {message}")

    # ---- flat tensors (export and serving) ------------------------------------------------

    def tensor_specs(self) -> list[dict]:
        """Name, dtype and shape of each flat tensor, in order. Shapes use ``"B"`` (rows),
        ``"N"`` (ids of all rows) and ``"L"`` (positions), which stay dynamic in an export."""
        if self.kind == SPARSE:
            return [{"name": f"{self.name}.values", "dtype": "int64", "shape": ["N"]},
                    {"name": f"{self.name}.lengths", "dtype": "int64", "shape": ["B"]}]
        if self.kind == SEQUENCE:
            return [{"name": f"{self.name}.ids", "dtype": "int64", "shape": ["B", "L"]},
                    {"name": f"{self.name}.lengths", "dtype": "int64", "shape": ["B"]}]
        raise NotImplementedError(f"{type(self).__name__}: tensor_specs for kind {self.kind!r}")

    def to_tensors(self, value: Any) -> list[torch.Tensor]:
        """The flat tensors of a parsed value (see :meth:`tensor_specs`)."""
        if self.kind == SPARSE:
            return [value.values, value.offsets[1:] - value.offsets[:-1]]
        if self.kind == SEQUENCE:
            return [value.ids, value.lengths]
        return [value]

    def from_tensors(self, tensors: list[torch.Tensor]) -> Any:
        """The parsed value of the flat tensors (inverse of :meth:`to_tensors`)."""
        if self.kind == SPARSE:
            values, lengths = tensors
            return SparseIds(values, torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)]))
        if self.kind == SEQUENCE:
            return SequenceIds(*tensors)
        return tensors[0]

    def example_tensors(self, lengths: torch.Tensor, width: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Random valid flat tensors of ``len(lengths)`` rows: row i has ``lengths[i]`` ids
        (sparse) or valid positions out of ``width`` (sequence); ids lie in the table."""
        rows = len(lengths)
        if self.kind == SPARSE:
            count = int(lengths.sum())
            return [torch.randint(0, self.embedding.num_embeddings, (count,), generator=generator), lengths.clone()]
        if self.kind == SEQUENCE:
            ids = torch.randint(0, self.embedding.num_embeddings, (rows, width), generator=generator)
            ids[torch.arange(width).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
            return [ids, lengths.clone()]
        raise NotImplementedError(f"{type(self).__name__}: example_tensors for kind {self.kind!r}")

    def describe(self) -> dict:
        """How the feature turns its raw column into tensors, for ``tower.json`` (a summary:
        the exported pipeline.config holds every field)."""
        return {"type": type(self).__name__}

    def column_type_problem(self, t: pa.DataType) -> str | None:
        """None when serving accepts a raw column of Arrow type ``t``, else what it expects."""
        return None


#: Inputs of at most this many values take the per-value path (serving one request).
SMALL_INPUT = 64


class IdMapper:
    """Maps raw categorical values to table rows, identically everywhere.

    Exactly one of: ``num_buckets`` (integers used as they are, out of range is an error),
    ``hash_bucket_size`` (FNV-1a 64 modulo the size), a vocabulary (value i -> i + 1,
    anything else -> 0, the out-of-vocabulary row).
    """

    #: Fields that size the table; exactly one must be set.
    SIZE_FIELDS = ("num_buckets", "hash_bucket_size", "vocab_list", "vocab_file")

    def __init__(self, config: Any, config_dir: str = "") -> None:
        self.num_buckets = int(config.num_buckets) if config.HasField("num_buckets") else 0
        self.hash_bucket_size = int(config.hash_bucket_size) if config.HasField("hash_bucket_size") else 0
        vocab = list(config.vocab_list)
        if config.HasField("vocab_file"):
            vocab = read_vocab_file(resolve_path(config.vocab_file, config_dir))
        self.vocab = pa.array(vocab, pa.string()) if vocab else None
        self._rows: dict[str, int] | None = None
        if self.vocab is not None:
            self.table_size = len(vocab) + 1
        elif self.hash_bucket_size:
            self.table_size = self.hash_bucket_size
        elif self.num_buckets:
            self.table_size = self.num_buckets
        else:
            raise ValueError(
                f"feature '{config.feature_name}': set one of num_buckets, hash_bucket_size, vocab_list, vocab_file"
            )

    @classmethod
    def sizes_set(cls, message: Any) -> list[str]:
        """Which of SIZE_FIELDS a message sets."""
        return [name for name in cls.SIZE_FIELDS
                if (len(getattr(message, name)) > 0 if name == "vocab_list" else message.HasField(name))]

    @classmethod
    def check_config(cls, message: Any, path: str, ctx: "ConfigContext") -> None:
        """embedding_dim and exactly one table size (vocabularies read, unique values)."""
        if message.embedding_dim == 0:
            what = "got 0" if message.HasField("embedding_dim") else "not set"
            ctx.add(join_path(path, "embedding_dim"), f"{what}, expected > 0")
        sizes = cls.sizes_set(message)
        if len(sizes) != 1:
            what = "no table size set" if not sizes else f"{', '.join(sizes)} are all set"
            ctx.add(path, f"{what}, expected exactly one of num_buckets, hash_bucket_size, vocab_list or vocab_file "
                          "to size the table")
            return
        size = sizes[0]
        if size in ("num_buckets", "hash_bucket_size"):
            if getattr(message, size) == 0:
                ctx.add(join_path(path, size), "got 0, expected > 0")
            return
        if size == "vocab_list":
            values: list[str] | None = list(message.vocab_list)
        elif not message.vocab_file:
            ctx.add(join_path(path, "vocab_file"), "empty, expected a file path")
            return
        else:
            values = ctx.read_vocab_file(join_path(path, "vocab_file"), message.vocab_file)
        if values is not None:
            seen: set[str] = set()
            for value in values:
                if value in seen:
                    ctx.add(join_path(path, size), f"value '{value}' appears twice, expected unique values")
                    break
                seen.add(value)

    def table_mapping(self) -> tuple:
        """("vocab", values...), ("hash_bucket_size",) or ("num_buckets",)."""
        if self.vocab is not None:
            return ("vocab", *self.vocab.to_pylist())
        return ("hash_bucket_size",) if self.hash_bucket_size else ("num_buckets",)

    def describe(self) -> dict:
        if self.vocab is not None:
            return {"mapping": "vocab", "vocab_size": len(self.vocab), "oov_row": 0}
        if self.hash_bucket_size:
            return {"mapping": "hash", "hash": "fnv1a64", "hash_bucket_size": self.hash_bucket_size}
        return {"mapping": "identity", "num_buckets": self.num_buckets}

    def map(self, values: pa.Array, feature: Feature, source: str) -> np.ndarray:
        """(N,) raw values -> (N,) int64 table rows."""
        if self.vocab is not None:
            if len(values) <= SMALL_INPUT:  # a request's few ids: a dict beats Arrow's per-call set-up
                rows = self._vocab_rows()
                return np.fromiter((0 if v is None else rows.get(str(v), 0) for v in values.to_pylist()),
                                   dtype=np.int64, count=len(values))
            as_text = values if is_string_type(values.type) else pc.cast(values, pa.string())
            index = pc.index_in(as_text, value_set=self.vocab)
            return pc.fill_null(pc.add(index, 1), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        if self.hash_bucket_size:
            try:
                return hash_bucket(values, self.hash_bucket_size)
            except TypeError as e:
                raise feature.error(source, f"hash_bucket_size needs string or integer values ({e})") from None
        return self._checked_ids(values, feature, source)

    def _vocab_rows(self) -> dict[str, int]:
        """value -> table row (built once, on the first small input)."""
        if self._rows is None:
            self._rows = {v: i + 1 for i, v in enumerate(self.vocab.to_pylist())}
        return self._rows

    def _checked_ids(self, values: pa.Array, feature: Feature, source: str) -> np.ndarray:
        if pa.types.is_null(values.type):  # an all-null column (e.g. a CSV block): no ids
            values = values.cast(pa.int64())
        if not pa.types.is_integer(values.type):
            if is_string_type(values.type):
                try:
                    values = pc.cast(values, pa.int64())
                except pa.ArrowInvalid as e:
                    raise feature.error(source, f"num_buckets needs integer ids, got a non-integer string ({e})") from None
            else:
                raise feature.error(source, f"num_buckets needs integer ids, got column type {values.type}")
        ids = values.to_numpy(zero_copy_only=False).astype(np.int64)
        if len(ids):
            bad = (ids < 0) | (ids >= self.num_buckets)
            if bad.any():
                raise feature.error(
                    source,
                    f"id {int(ids[bad][0])} is outside [0, num_buckets={self.num_buckets}) "
                    f"({int(bad.sum())} ids out of range); raise num_buckets or use hash_bucket_size",
                )
        return ids


def resolve_path(path: str, config_dir: str) -> str:
    """A path written in a config: absolute as is (``~`` expanded), relative against ``config_dir``."""
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) or not config_dir else os.path.join(config_dir, path)


__all__ = ["EmbeddingSpec", "Feature", "IdMapper", "is_id_type", "is_list_type", "is_number_type", "is_string_type",
           "pooling_name", "resolve_path"]
