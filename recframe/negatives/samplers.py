"""Negative samplers: items drawn from an item pool, appended to a training batch.

Configured by the ``data_config.sampler`` oneof (message name == class name, registered in
:data:`recframe.registry.SAMPLERS`); built by :func:`create_sampler`. Pure NumPy / pyarrow.

The item pool
    A Parquet/CSV table (``input_path``: comma-separated files, directories or globs, relative
    to the config directory) holding the item id column and every item-side feature column,
    with the same names as in the training data (:meth:`BaseSampler.align_pool_types` casts
    them to the training types). It is loaded fully at start-up. Load errors
    (:class:`~recframe.data.inputs.DataError`) name the file and the column: a missing column
    (with a "did you mean"), an empty pool, a null or duplicate id, a bad weight. Pools and
    edge tables are read, and ids compared, by :mod:`recframe.negatives.tables`.

Weights and probabilities
    Each pool item has a weight: the ``weight_field`` column (finite, >= 0, not all zero) or a
    function of ``count``, the item's number of training rows
    (:class:`~recframe.negatives.item_frequency.ItemFrequency`), picked by
    ``frequency_weighting`` (:mod:`recframe.negatives.weighting`): ``COUNT_POWER`` (the default)
    is ``count ** alpha`` (``alpha = 0`` is uniform and needs no counts, ``alpha = 0.75`` the
    word2vec-style popularity sampler); ``LOG_COUNT``, ``LOG_UNIFORM_RANK`` (RALM) and
    ``WORD2VEC_SUBSAMPLING`` are the other presets. A pool item that never occurs in the
    training data counts 1 (as rare as the rarest seen item, the convention of
    ``ItemFrequency.log_q``), so every pool item stays reachable. ``q(item) = weight / sum``
    is the probability of one draw (:meth:`BaseSampler.probability`, 0 for items outside the
    pool); it travels with the batch (``*_probability``) for an exact logQ correction.

Drawing
    With replacement, by Vose's alias method (:class:`~recframe.negatives.alias.AliasTable`):
    O(n) build, O(1) per draw, vectorized. ``num_sample`` may exceed the pool size (duplicates
    are then certain). The same ``numpy.random.Generator`` state gives the same samples; the
    caller seeds one per DataLoader worker and batch.

The samplers (see each class for the details)
    - :class:`NegativeSampler`: ``num_sample`` negatives per batch shared by all its rows.
    - :class:`~recframe.negatives.edge_samplers.NegativeSamplerV2`: ``num_sample`` negatives per
      row, never an item the row's user has a positive edge with; ``max_retries`` redraws, then
      masked out (``row_valid``).
    - :class:`~recframe.negatives.edge_samplers.HardNegativeSampler`: the shared negatives plus
      up to ``num_hard_sample`` of the row's user's hard negatives per row.
    - :class:`WholePoolSampler`: every pool item once per batch, shared by all its rows (the
      exact softmax over a small catalogue).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from recframe.data.inputs import PARQUET, DataError, normalize_dataset_type
from recframe.errors import RecframeError, did_you_mean
from recframe.negatives.alias import AliasTable
from recframe.negatives.tables import align_types, examples, is_integer_column, keys_of, lookup, read_table
from recframe.negatives.weighting import COUNT_POWER, WORD2VEC_SUBSAMPLING, frequency_weights, preset_name
from recframe.protos import data_pb2
from recframe.protoutil import oneof_field_name
from recframe.registry import SAMPLERS

logger = logging.getLogger(__name__)

__all__ = [
    "BaseSampler",
    "NegativeSampler",
    "SampledItems",
    "SamplerConfigError",
    "WholePoolSampler",
    "create_sampler",
]


class SamplerConfigError(RecframeError, ValueError):
    """A sampler config field is missing or out of range; the message names the field path."""


# --------------------------------------------------------------------------------------------
# Sampled items
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SampledItems:
    """Items sampled for one batch.

    ``shared_*``: S items shared by every row of the batch. ``row_*``: R items each belonging
    to one row (``row_index``, non-decreasing). Tables hold the sampler's ``item_columns``.
    ``*_probability`` is the probability of the draw under the sampler (for logQ); NaN means
    "not sampled, no correction" (hard negatives). ``row_valid`` False marks a fallback slot
    (NegativeSamplerV2 after ``max_retries``) that must be masked out of the loss.
    """

    shared_table: pa.Table | None
    shared_keys: np.ndarray
    shared_probability: np.ndarray
    row_table: pa.Table | None
    row_index: np.ndarray
    row_keys: np.ndarray
    row_probability: np.ndarray
    row_valid: np.ndarray

    @property
    def num_shared(self) -> int:
        return int(self.shared_keys.size)

    @property
    def num_row_items(self) -> int:
        return int(self.row_keys.size)


def empty_i64() -> np.ndarray:
    """A (0,) int64 array (no items)."""
    return np.zeros(0, dtype=np.int64)


def empty_f64() -> np.ndarray:
    """A (0,) float64 array (no items)."""
    return np.zeros(0, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------


class BaseSampler:
    """The item pool, its weights and alias table; subclasses implement :meth:`sample`.

    Args:
        config: the sampler's proto message.
        item_id_field: default item id column (data_config.item_id_field); the config's own
            ``item_id_field`` wins when set.
        item_columns: the item-side feature input columns; the sampled tables hold these, in
            this order (duplicates dropped).
        item_frequency: training counts, needed when :meth:`needs_item_counts`.
        dataset_type: ParquetDataset / CsvDataset (enum value or name) of the pool and edges.
        csv_delimiter: field delimiter of CSV files.
        config_dir: directory that relative input paths are resolved against.
    """

    @classmethod
    def config_problems(cls, message: Any, path: str, default_item_id_field: str = "") -> list[tuple[str, str]]:
        """(field path, problem) of a sampler message, without reading any file: the pool
        fields (input_path, item_id_field, and num_sample where the message has it) and the weights
        (weight_field, alpha, frequency_weighting, subsampling_threshold) where the message has
        them. Subclasses add their own rules."""
        problems: list[tuple[str, str]] = []
        fields = {f.name for f in message.DESCRIPTOR.fields}

        def add(name: str, what: str) -> None:
            problems.append((f"{path}.{name}", what))

        if not message.input_path.strip():
            add("input_path", "not set, expected the item pool's Parquet/CSV path")
        if "num_sample" in fields and message.num_sample < 1:
            add("num_sample", f"got {message.num_sample}, expected >= 1")
        if not (message.item_id_field or default_item_id_field):
            add("item_id_field", "not set and data_config.item_id_field is not set either, expected the item id column")
        if "alpha" in fields:
            alpha = float(message.alpha)
            if not np.isfinite(alpha) or alpha < 0:
                add("alpha", f"got {alpha:g}, expected a finite number >= 0")
            if message.weight_field and message.HasField("alpha"):
                add("alpha", "set together with weight_field, expected one of them (alpha applies to training counts)")
        if "frequency_weighting" in fields:
            preset = message.frequency_weighting
            name = preset_name(preset)
            if message.weight_field and message.HasField("frequency_weighting"):
                add("frequency_weighting", f"{name} set together with weight_field, expected one of them "
                                           "(frequency_weighting weights the training counts, weight_field "
                                           "replaces them)")
            if preset != COUNT_POWER and message.HasField("alpha"):
                add("alpha", f"set with frequency_weighting: {name}, but alpha is the exponent of COUNT_POWER only; "
                             "expected no alpha (or frequency_weighting: COUNT_POWER)")
            if message.HasField("subsampling_threshold"):
                threshold = float(message.subsampling_threshold)
                if preset != WORD2VEC_SUBSAMPLING:
                    add("subsampling_threshold", f"set with frequency_weighting: {name}, but it is the threshold of "
                                                 "WORD2VEC_SUBSAMPLING only; expected no subsampling_threshold (or "
                                                 "frequency_weighting: WORD2VEC_SUBSAMPLING)")
                elif not (np.isfinite(threshold) and 0 < threshold <= 1):
                    add("subsampling_threshold", f"got {threshold:g}, expected a number in (0, 1] (word2vec uses 1e-3 "
                                                 "to 1e-5)")
        return problems

    @staticmethod
    def edge_problems(message: Any, path: str, edge_field: str) -> list[tuple[str, str]]:
        """The rules of a sampler with a (user id, item id) edge table."""
        problems = []
        if not getattr(message, edge_field).strip():
            problems.append((f"{path}.{edge_field}", "not set, expected the Parquet/CSV path of the (user id, item id) "
                                                     "table"))
        if not message.user_id_field:
            problems.append((f"{path}.user_id_field", "not set, expected the user id column of the training data and "
                                                      "the edge table"))
        return problems

    @classmethod
    def needs_item_counts(cls, message: Any) -> bool:
        """Whether the pool weights need the training item counts (``item_frequency``): every
        preset but uniform COUNT_POWER (alpha 0), unless weight_field replaces them."""
        if getattr(message, "weight_field", ""):
            return False
        return getattr(message, "alpha", 0.0) > 0 or getattr(message, "frequency_weighting", COUNT_POWER) != COUNT_POWER

    @classmethod
    def check_config(cls, message: Any, path: str, ctx: Any) -> None:
        """Report the problems of the sampler message at ``path`` (config validation)."""
        for where, problem in cls.config_problems(message, path, ctx.config.data_config.item_id_field):
            ctx.add(where, problem)

    def __init__(
        self,
        config: Any,
        *,
        item_id_field: str,
        item_columns: Sequence[str],
        item_frequency: Any = None,
        dataset_type: int | str = PARQUET,
        csv_delimiter: str = ",",
        config_dir: str = "",
    ) -> None:
        self.config = config
        self.path = "data_config." + oneof_field_name(data_pb2.DataConfig.DESCRIPTOR, "sampler", config.DESCRIPTOR.name)
        problems = self.config_problems(config, self.path, item_id_field)
        if problems:
            raise SamplerConfigError("; ".join(f"{p}: {m}" for p, m in problems))
        self.item_id_field = config.item_id_field or item_id_field
        self.item_columns = list(dict.fromkeys(item_columns))
        self.num_sample = int(getattr(config, "num_sample", 0))
        self.dataset_type = normalize_dataset_type(dataset_type)
        self.csv_delimiter = csv_delimiter
        self.config_dir = config_dir
        weight_field = getattr(config, "weight_field", "")
        extra = [weight_field] if weight_field else []
        columns = list(dict.fromkeys([self.item_id_field, *self.item_columns, *extra]))
        raw, where = read_table(self._resolve(config.input_path), columns, self.dataset_type,
                                 csv_delimiter, f"{self.path}.input_path: item pool")
        self.pool_source = f"item pool {where} ({self.path}.input_path)"
        if raw.num_rows == 0:
            raise DataError(f"{self.pool_source}: the pool is empty, expected at least one item")
        ids = raw.column(self.item_id_field)
        keys = keys_of(ids, self.pool_source, self.item_id_field)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if dup.size:
            positions = np.unique(order[dup + 1])
            raise DataError(f"{self.pool_source}: column {self.item_id_field!r} has duplicate ids: "
                            f"{examples(ids, positions)}; expected each item once")
        self.pool_keys = keys  # (N,) in pool row order
        self._sorted_keys = sorted_keys
        self._sorted_rows = order.astype(np.int64)
        self.pool_ids = ids
        self._ids_are_integers = is_integer_column(ids)
        self.alias = AliasTable(self.pool_weights(raw, item_frequency))
        self.pool_probability = self.alias.probabilities
        self.pool_table = raw.select(self.item_columns)
        logger.info("%s: %d items", self.pool_source, self.num_items)

    # -- pool ---------------------------------------------------------------------------------

    def _resolve(self, path: str) -> str:
        parts = [p.strip() for p in path.split(",") if p.strip()]
        return ",".join(p if os.path.isabs(os.path.expanduser(p)) or not self.config_dir
                        else os.path.join(self.config_dir, p) for p in parts)

    def pool_weights(self, raw: pa.Table, item_frequency: Any) -> np.ndarray:
        """(N,) non-negative weight of each pool row (``raw``: the pool's columns): the
        ``weight_field`` column, else the ``frequency_weighting`` preset of the training counts
        (:func:`~recframe.negatives.weighting.frequency_weights`; count^``alpha`` by default).
        Subclasses may override."""
        weight_field, alpha = getattr(self.config, "weight_field", ""), getattr(self.config, "alpha", 0.0)
        preset = getattr(self.config, "frequency_weighting", COUNT_POWER)
        where = f"{self.pool_source}: column {weight_field!r}"
        if weight_field:
            column = raw.column(weight_field)
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                raise DataError(f"{where} has type {column.type}, expected numbers")
            if column.null_count:
                raise DataError(f"{where} has {column.null_count} null weight(s), expected none")
            w = column.to_numpy().astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
            if bad.size:
                raise DataError(f"{where} has {bad.size} negative or non-finite weight(s) "
                                f"(e.g. {float(w[bad[0]])!r} for id {self.pool_ids[int(bad[0])].as_py()!r}), expected >= 0")
            if not w.sum() > 0:
                raise DataError(f"{where}: every weight is zero, expected at least one positive weight")
            return w
        if preset == COUNT_POWER and alpha == 0:
            return np.ones(len(self.pool_keys), dtype=np.float64)
        if item_frequency is None:
            field, value = ("alpha", f"{alpha:g}") if preset == COUNT_POWER else ("frequency_weighting",
                                                                                 preset_name(preset))
            raise SamplerConfigError(f"{self.path}.{field}: {value} needs the item counts of the "
                                     "training data (item_frequency), none were given")
        counts = self.pool_counts(item_frequency)
        return frequency_weights(counts, item_frequency.total, preset, alpha=float(alpha),
                                 threshold=float(getattr(self.config, "subsampling_threshold", 1e-3)))

    def pool_counts(self, item_frequency: Any) -> np.ndarray:
        """(N,) float64 training count of each pool row; 1 for an item never seen in training."""
        pos, found = lookup(np.asarray(item_frequency.keys, np.int64), self.pool_keys)
        if not found.any():
            raise DataError(f"{self.pool_source}: none of its {len(self.pool_keys)} ids occurs in the "
                            f"training data; are the id types the same (integer vs string ids)?")
        return np.maximum(np.where(found, np.asarray(item_frequency.counts, np.float64)[pos], 1.0), 1.0)

    @property
    def num_items(self) -> int:
        return int(self.pool_keys.size)

    def pool_rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of each key in the pool, found) for (n,) int64 item keys."""
        pos, found = lookup(self._sorted_keys, np.asarray(keys, np.int64))
        return self._sorted_rows[pos] if pos.size else pos, found

    def probability(self, keys: np.ndarray) -> np.ndarray:
        """(n,) float64 q_sampler of each item key: one draw's probability; 0 outside the pool."""
        rows, found = self.pool_rows(keys)
        return np.where(found, self.pool_probability[rows], 0.0) if rows.size else np.zeros(0)

    def align_pool_types(self, schema: pa.Schema) -> None:
        """Cast the pool's item columns to the types of the training data's ``schema``."""
        self.pool_table = align_types(self.pool_table, schema, self.pool_source)

    def _shared(self, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        idx = self.alias.draw(self.num_sample, rng)
        return self.pool_table.take(idx), self.pool_keys[idx], self.pool_probability[idx]

    # -- edges --------------------------------------------------------------------------------

    def _read_edges(self, spec: str, field: str) -> tuple[np.ndarray, np.ndarray, pa.ChunkedArray, str]:
        """(user keys, item keys, item id column, description) of an edge table."""
        user_field = self.config.user_id_field
        columns = list(dict.fromkeys([user_field, self.item_id_field]))
        table, where = read_table(self._resolve(spec), columns, self.dataset_type,
                                   self.csv_delimiter, f"{self.path}.{field}: edge table")
        where = f"edge table {where} ({self.path}.{field})"
        if table.num_rows == 0:
            raise DataError(f"{where}: the table is empty, expected (user, item) rows")
        users = table.column(user_field)
        items = table.column(self.item_id_field)
        if is_integer_column(items) != self._ids_are_integers:
            raise DataError(f"{where}: column {self.item_id_field!r} has type {items.type} but the item "
                            f"pool's has type {self.pool_ids.type}; integer and string ids never match")
        self._users_are_integers = is_integer_column(users)
        return (keys_of(users, where, user_field), keys_of(items, where, self.item_id_field), items, where)

    def _batch_users(self, batch: pa.Table | pa.RecordBatch) -> np.ndarray:
        field = self.config.user_id_field
        names = list(batch.schema.names)
        if field not in names:
            raise DataError(f"{self.path}.user_id_field: column {field!r} is not in the batch"
                            f"{did_you_mean(field, names)} (columns: {', '.join(names)})")
        column = batch.column(field)
        if is_integer_column(column) != self._users_are_integers:
            raise DataError(f"{self.path}.user_id_field: column {field!r} has type {column.type} in the "
                            f"batch but another in the edge table; integer and string ids never match")
        return keys_of(column, "batch", field)

    def sample(self, batch: pa.Table | pa.RecordBatch, rng: np.random.Generator) -> SampledItems:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pool_source}, num_sample={self.num_sample})"


@SAMPLERS.register()
class NegativeSampler(BaseSampler):
    """``num_sample`` negatives per batch, shared by all its rows, drawn with replacement.

    ``shared_probability`` is q(item) of each draw; no per-row items.
    """


    def sample(self, batch: pa.Table | pa.RecordBatch, rng: np.random.Generator) -> SampledItems:
        table, keys, prob = self._shared(rng)
        return SampledItems(table, keys, prob, None, empty_i64(), empty_i64(), empty_f64(),
                            np.zeros(0, bool))


@SAMPLERS.register()
class WholePoolSampler(BaseSampler):
    """Every pool item, once and in pool order, as the shared negatives of every batch.

    ``num_sample`` is the pool size N; ``shared_probability`` is 1 / N for every item (N
    uniform draws would give each item one appearance on average, which is what the batch
    gets exactly), so the logQ mixture with in-batch negatives stays right, and without them
    every candidate's correction is the same constant: the softmax over the pool is exact.
    No per-row items; the random generator is not used.
    """

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.num_sample = self.num_items

    def sample(self, batch: pa.Table | pa.RecordBatch, rng: np.random.Generator) -> SampledItems:
        return SampledItems(self.pool_table, self.pool_keys, self.pool_probability, None, empty_i64(),
                            empty_i64(), empty_f64(), np.zeros(0, bool))


def create_sampler(
    data_config: Any,
    *,
    item_columns: Sequence[str],
    item_frequency: Any = None,
    config_dir: str = "",
) -> BaseSampler | None:
    """The sampler of ``data_config``'s ``sampler`` oneof (None when unset).

    The class is looked up in :data:`recframe.registry.SAMPLERS` by the message name.
    """
    which = data_config.WhichOneof("sampler")
    if which is None:
        return None
    message = getattr(data_config, which)
    cls = SAMPLERS.get(type(message).DESCRIPTOR.name)
    return cls(
        message,
        item_id_field=data_config.item_id_field,
        item_columns=item_columns,
        item_frequency=item_frequency,
        dataset_type=data_config.dataset_type,
        csv_delimiter=data_config.csv_delimiter,
        config_dir=config_dir,
    )
