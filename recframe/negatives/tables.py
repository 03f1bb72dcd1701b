"""Item pool and edge tables of the samplers: reading, type alignment, id keys and lookups.

Every id comparison (pool, edge tables, batch) uses :func:`recframe.features.hashing.item_keys`
(integer ids as int64, strings hashed), so an integer id and its decimal string are *different*
items: the samplers raise when a pool or an edge table shares no id with the data it is checked
against, and when the batch's user ids are integers and the edge table's are strings (or the
reverse).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recframe.data.inputs import PARQUET, DataError, check_columns, expand_input_paths, file_columns
from recframe.features.hashing import item_keys


def align_types(table: pa.Table, schema: pa.Schema, source: str = "item pool") -> pa.Table:
    """``table`` with each column that ``schema`` also has cast to the schema's type.

    Columns absent from ``schema`` are kept as they are. Raises :class:`DataError` naming
    ``source``, the column and both types when a cast is impossible (e.g. strings that are
    not numbers to int64, or an int64 that overflows an int32).
    """
    columns = []
    for name in table.column_names:
        column = table.column(name)
        index = schema.get_field_index(name)
        if index >= 0 and not column.type.equals(schema.field(index).type):
            target = schema.field(index).type
            try:
                column = pc.cast(column, target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise DataError(
                    f"{source}: column {name!r} has type {column.type}, which cannot be cast to "
                    f"the training data's type {target}: {exc}"
                ) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def read_table(spec: str, columns: Sequence[str], dataset_type: str, csv_delimiter: str,
                what: str) -> tuple[pa.Table, str]:
    """All rows of the files of ``spec``, only ``columns``: (table, description of the files).

    ``what`` (e.g. "data_config.negative_sampler.input_path: item pool") prefixes every error.
    """
    suffixes = (".parquet",) if dataset_type == PARQUET else (".csv",)
    try:
        paths = expand_input_paths(spec, suffixes)
    except DataError as exc:
        raise type(exc)(f"{what}: {exc}") from exc
    tables = []
    for path in paths:
        check_columns(f"{what} {path}", file_columns(path, dataset_type, csv_delimiter), columns)
        try:
            if dataset_type == PARQUET:
                table = pq.read_table(path, columns=list(columns))
            else:
                table = pacsv.read_csv(
                    path,
                    parse_options=pacsv.ParseOptions(delimiter=csv_delimiter),
                    convert_options=pacsv.ConvertOptions(include_columns=list(columns)),
                )
        except Exception as exc:
            raise DataError(f"{what} {path}: cannot read it: {exc}") from exc
        tables.append(table.select(list(columns)))
    where = paths[0] if len(paths) == 1 else f"{spec} ({len(paths)} files)"
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{what} {where}: the files' column types differ: {exc}") from exc
    return table.combine_chunks(), where


def keys_of(column: pa.ChunkedArray | pa.Array, where: str, name: str) -> np.ndarray:
    """item_keys of a column; a null id is a DataError naming the file and the column."""
    if column.null_count:
        raise DataError(f"{where}: column {name!r} has {column.null_count} null id(s), expected none")
    try:
        return item_keys(column)
    except (TypeError, pa.ArrowInvalid) as exc:
        raise DataError(f"{where}: column {name!r} of type {column.type} cannot be used as an id: {exc}") from exc


def examples(values: pa.ChunkedArray | pa.Array, positions: np.ndarray, limit: int = 5) -> str:
    shown = values.take(pa.array(positions[:limit])).to_pylist()
    more = f", ... ({positions.size} in all)" if positions.size > limit else ""
    return ", ".join(repr(v) for v in shown) + more


def is_integer_column(column: pa.ChunkedArray | pa.Array) -> bool:
    return pa.types.is_integer(column.type)


def lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in sorted_keys, found) of each key."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, np.int64), np.zeros(keys.shape, bool)
    if keys.size > 256:  # sorted queries search ~2x faster (locality); unsort afterwards
        order = np.argsort(keys)
        pos = np.empty(keys.size, dtype=np.int64)
        pos[order] = np.searchsorted(sorted_keys, keys[order])
    else:
        pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, sorted_keys.size - 1)
    return pos, sorted_keys[pos] == keys


def first_of_each(values: np.ndarray) -> np.ndarray:
    """Sorted (k,) indices of the first occurrence of each distinct value.

    Sort-based: NumPy 2.x's ``np.unique`` takes seconds on millions of 64-bit values.
    """
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    return np.sort(order[starts])


def group_sum(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, sum of ``values`` per key)."""
    if keys.size == 0:
        return np.zeros(0, dtype=keys.dtype), np.zeros(0, dtype=np.float64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts], np.add.reduceat(values[order].astype(np.float64), starts)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (a bijection of uint64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def pair_hash(user_keys: np.ndarray, item_keys_: np.ndarray) -> np.ndarray:
    """(N,) uint64 hash of each (user key, item key) pair (collisions ~ N^2 / 2^65)."""
    u = np.asarray(user_keys, dtype=np.int64).view(np.uint64)
    i = np.asarray(item_keys_, dtype=np.int64).view(np.uint64)
    return _mix64(_mix64(u) ^ i)
