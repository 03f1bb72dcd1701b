"""Turning one Arrow column into flat values with row ownership (vectorized).

Every categorical feature reduces its column to ``values`` (the non-null elements, in
order) and ``row_of`` (the row each element belongs to), whatever the column type:
scalar, list, or a string split by a separator. Nulls and empty strings are dropped, so
a null or empty row simply owns no values.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recframe.errors import RecframeError


class FeatureInputError(RecframeError, ValueError):
    """Bad input data for a feature: names the source, the feature and the column."""


def locate_row(source: str, row: int) -> str:
    """Where row ``row`` of a chunk comes from: ``path row N`` when the reader's source can
    tell (:class:`~recframe.data.reader.ChunkSource`), else ``row N of the chunk``."""
    locate = getattr(source, "locate", None)
    return locate(row) if locate is not None else f"row {row} of the chunk"


def _combine(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def flatten_column(column: pa.Array | pa.ChunkedArray, separator: str | None) -> tuple[pa.Array, np.ndarray]:
    """Flatten a column into its elements and the row index of each element.

    Args:
        column: (B,) scalar, list or (with ``separator``) delimited-string column.
        separator: splits string values into several elements; None keeps them whole.
    Returns:
        values: (N,) Arrow array of the non-null, non-empty elements.
        row_of: (N,) int64 row index of each element (non-decreasing).
    """
    column = _combine(column)
    if (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) and separator:
        column = pc.split_pattern(column, pattern=separator)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        row_of = pc.list_parent_indices(column).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(column)
    else:
        row_of = np.arange(len(column), dtype=np.int64)
        values = column
    keep = pc.is_valid(values)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        keep = pc.and_(keep, pc.not_equal(pc.utf8_length(values), 0))
    if values.null_count or not pc.all(keep).as_py():
        keep_np = keep.to_numpy(zero_copy_only=False).astype(bool)
        values = values.filter(keep)
        row_of = row_of[keep_np]
    return values, row_of


def _is_string(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _has_empty_string(values: pa.Array) -> bool:
    """Whether a string array without nulls holds an empty string (read from its offsets)."""
    offsets_type = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], dtype=offsets_type)[values.offset : values.offset + len(values) + 1]
    return bool((offsets[1:] == offsets[:-1]).any())


def flatten_to_offsets(column: pa.Array | pa.ChunkedArray, separator: str | None) -> tuple[pa.Array, np.ndarray]:
    """:func:`flatten_column` with the elements' row offsets instead of their rows.

    The same result as ``values, row_of = flatten_column(column, separator)`` followed by
    ``offsets_from_rows(row_of, len(column))``, taken directly from the column when nothing
    has to be dropped (no null rows, no null or empty elements).

    Returns:
        values: (N,) Arrow array of the non-null, non-empty elements.
        offsets: (B + 1,) int64; row i owns ``values[offsets[i]:offsets[i + 1]]``.
    """
    column = _combine(column)
    num_rows = len(column)
    if _is_string(column.type) and separator:
        column = pc.split_pattern(column, pattern=separator)
    if not column.null_count:
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            values = pc.list_flatten(column)
            if not values.null_count and not (_is_string(values.type) and _has_empty_string(values)):
                offsets = column.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
                return values, offsets - offsets[0]
        elif not pa.types.is_fixed_size_list(column.type) and not pa.types.is_null(column.type):
            if not (_is_string(column.type) and _has_empty_string(column)):
                return column, np.arange(num_rows + 1, dtype=np.int64)
    values, row_of = flatten_column(column, None)
    return values, offsets_from_rows(row_of, num_rows)


def offsets_from_rows(row_of: np.ndarray, num_rows: int) -> np.ndarray:
    """(B + 1,) int64 offsets from the (N,) non-decreasing row index of each element."""
    counts = np.bincount(row_of, minlength=num_rows) if len(row_of) else np.zeros(num_rows, np.int64)
    offsets = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets
