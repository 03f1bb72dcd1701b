"""Stable 64-bit FNV-1a hashing of strings, vectorized over Arrow arrays.

The hash depends only on the UTF-8 bytes of each value, so it is the same in every
process, on every machine and in every version of recframe (unlike Python's ``hash``).
Integers are hashed by their decimal string, so ``5`` and ``"5"`` land in the same bucket.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET_BASIS = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def _as_large_string(values: pa.Array) -> pa.Array:
    if pa.types.is_integer(values.type) or pa.types.is_null(values.type):  # null: an all-null column
        values = pc.cast(values, pa.string())
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            or pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        raise TypeError(f"can only hash strings or integers, got {values.type}")
    return pc.cast(values, pa.large_binary())


#: Inputs of at most this many values are hashed value by value (serving one request).
SMALL_INPUT = 64
_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=1 << 16)
def _fnv1a64_text(text: str) -> int:
    """FNV-1a 64 of one string's UTF-8 bytes (the same as the vectorized path)."""
    h = int(FNV_OFFSET_BASIS)
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * int(FNV_PRIME)) & _MASK
    return h


def fnv1a64(values: pa.Array | pa.ChunkedArray | list) -> np.ndarray:
    """FNV-1a 64-bit hash of each value.

    Args:
        values: (N,) Arrow string/binary/integer array (or a Python list of str/int).
            Nulls hash like the empty string; callers drop them first.
    Returns:
        (N,) uint64 hashes.
    """
    if isinstance(values, list):
        values = pa.array(values)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) <= SMALL_INPUT and (pa.types.is_integer(values.type) or pa.types.is_string(values.type)):
        # A request's few values: per value in Python (cached), without Arrow's per-call set-up.
        return np.fromiter((_fnv1a64_text("" if v is None else str(v)) for v in values.to_pylist()),
                           dtype=np.uint64, count=len(values))
    arr = _as_large_string(values)
    n = len(arr)
    hashes = np.full(n, FNV_OFFSET_BASIS, dtype=np.uint64)
    if n == 0:
        return hashes
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data_buffer = arr.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    # One pass per byte position over the values that are still that long: the loop runs
    # max(len) times, never once per row.
    rows = np.arange(n)
    for position in range(int(lengths.max(initial=0))):
        rows = rows[lengths[rows] > position]
        byte = data[starts[rows] + position].astype(np.uint64)
        hashes[rows] = (hashes[rows] ^ byte) * FNV_PRIME
    return hashes


def hash_bucket(values: pa.Array | pa.ChunkedArray | list, num_buckets: int) -> np.ndarray:
    """(N,) int64 bucket in [0, num_buckets) of each value: fnv1a64(value) % num_buckets."""
    return (fnv1a64(values) % np.uint64(num_buckets)).astype(np.int64)


def item_keys(values: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """(N,) int64 identity key of each item id: integers as they are, strings hashed.

    Two rows hold the same item exactly when their keys are equal (up to 64-bit hash
    collisions for string ids).
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iu":
            return values.astype(np.int64)
        values = pa.array(values)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count:
        raise ValueError("item ids must not be null")
    if pa.types.is_integer(values.type):
        return values.to_numpy(zero_copy_only=False).astype(np.int64)
    return fnv1a64(values).view(np.int64)
