"""Streaming Parquet / CSV reader, sharded across readers, shuffled, resumable.

Vocabulary:

- A *work unit* is a Parquet row group or a whole CSV file
  (:class:`~recframe.data.inputs.WorkUnit`); its row count is known up front.
- A *reader* is one consumer of the data: ``global_reader = rank * num_workers + worker_id``
  among ``num_readers = world_size * num_workers`` (``num_workers`` counts 0 as 1).

Sharding (:func:`plan_epoch`): each epoch the units are put in an order (shuffled with a seed
derived from ``(seed, epoch)`` -- identical on every reader -- or kept in file order) and laid
end to end as one sequence of ``N`` rows. Reader ``r`` reads the contiguous row range
``[N * r // R, N * (r + 1) // R)`` of that sequence, as a list of :class:`ReadPiece` (a unit and
a row range inside it). Every row is therefore read exactly once per epoch, and readers differ by
at most one row, however few or uneven the files and row groups are (a unit that straddles a
boundary is split by rows between two readers).

Batching (:meth:`StreamingReader.iter_batches`): a reader streams its pieces in chunks of only
the requested columns and emits ``pyarrow.RecordBatch`` of exactly ``batch_size`` rows, except
the last one of the reader (dropped with ``drop_remainder``). So a reader with ``n`` rows yields
``n // batch_size`` batches, plus one if ``n % batch_size`` and not ``drop_remainder``
(:meth:`StreamingReader.reader_num_batches`); this does not depend on the epoch. With
``shuffle`` the rows go through a buffer of ``shuffle_buffer_size`` rows seeded by
``(seed, epoch, global_reader)``; without it the rows come out in file / row order.

Resume (:class:`ReaderState`): the batch sequence of a reader is a pure function of
``(files, options, epoch, reader index, number of readers)``. ``skip_batches=k`` yields that
sequence minus its first ``k`` batches: without shuffle the skipped rows are not even read,
with shuffle they are read and discarded (the buffer must see them to stay deterministic).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recframe.data.inputs import (
    DATA_SUFFIXES,
    PARQUET,
    CsvOptions,
    DataError,
    WorkUnit,
    check_columns,
    csv_header,
    expand_input_paths,
    list_work_units,
    normalize_dataset_type,
    open_parquet,
)

# Hidden columns that carry each row's provenance through the shuffle buffer.
_SRC_FILE = "__recframe_src_file__"
_SRC_ROW = "__recframe_src_row__"
# Salt separating the row-buffer seed stream from the unit-order seed stream.
_ROW_SHUFFLE_SALT = 0x5EED


# --------------------------------------------------------------------------------------------
# Work units and the per-epoch plan
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReadPiece:
    """Rows ``[start, stop)`` of a work unit (unit-local row indices)."""

    unit: WorkUnit
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def unit_order(units: Sequence[WorkUnit], seed: int, epoch: int, shuffle: bool) -> list[WorkUnit]:
    """The epoch's unit order: a permutation seeded by ``(seed, epoch)``, or file order."""
    if not shuffle:
        return list(units)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return [units[i] for i in rng.permutation(len(units))]


def reader_row_ranges(total_rows: int, num_readers: int) -> list[tuple[int, int]]:
    """Near-equal contiguous row ranges ``[N*r//R, N*(r+1)//R)`` of ``total_rows`` rows."""
    return [
        (total_rows * r // num_readers, total_rows * (r + 1) // num_readers)
        for r in range(num_readers)
    ]


def slice_pieces(ordered_units: Sequence[WorkUnit], start: int, stop: int) -> list[ReadPiece]:
    """The pieces covering rows ``[start, stop)`` of the units laid end to end."""
    pieces = []
    unit_begin = 0
    for unit in ordered_units:
        unit_end = unit_begin + unit.num_rows
        lo, hi = max(start, unit_begin), min(stop, unit_end)
        if lo < hi:
            pieces.append(ReadPiece(unit, lo - unit_begin, hi - unit_begin))
        if unit_end >= stop:
            break
        unit_begin = unit_end
    return pieces


def plan_epoch(
    units: Sequence[WorkUnit], num_readers: int, seed: int, epoch: int, shuffle: bool
) -> list[list[ReadPiece]]:
    """Pieces of every reader for one epoch (see the module docstring).

    Each row of ``units`` lands in exactly one piece of exactly one reader, and the readers'
    row counts differ by at most one.
    """
    if num_readers < 1:
        raise ValueError(f"num_readers must be >= 1, got {num_readers}")
    ordered = unit_order(units, seed, epoch, shuffle)
    total = sum(u.num_rows for u in ordered)
    return [slice_pieces(ordered, lo, hi) for lo, hi in reader_row_ranges(total, num_readers)]


def batches_for_rows(num_rows: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches a reader with ``num_rows`` rows yields."""
    full, rest = divmod(num_rows, batch_size)
    return full + (1 if rest and not drop_remainder else 0)


@dataclass
class ReaderState:
    """Where one reader stands: ``batches_consumed`` batches of ``epoch`` already used.

    Resuming = ``StreamingReader.iter_batches(epoch, reader_index, num_readers,
    skip_batches=batches_consumed)``; it yields exactly the batches that the uninterrupted
    iteration would have yielded after the first ``batches_consumed``, provided the files,
    the options (batch size, shuffle, buffer size, seed, columns) and ``num_readers`` are
    unchanged.
    """

    epoch: int = 0
    reader_index: int = 0
    num_readers: int = 1
    batches_consumed: int = 0


# --------------------------------------------------------------------------------------------
# Streaming pieces
# --------------------------------------------------------------------------------------------


def _with_provenance(chunk: pa.RecordBatch, unit: WorkUnit, first_row: int) -> pa.Table:
    """``chunk`` plus the hidden file-index and file-row columns."""
    n = chunk.num_rows
    table = pa.Table.from_batches([chunk])
    table = table.append_column(_SRC_FILE, pa.array(np.full(n, unit.file_index, np.int32)))
    rows = np.arange(first_row, first_row + n, dtype=np.int64) + unit.file_row_offset
    return table.append_column(_SRC_ROW, pa.array(rows))


def _clip(
    chunks: Iterator[pa.RecordBatch], piece: ReadPiece, unit_label: str
) -> Iterator[pa.Table]:
    """The rows ``[piece.start, piece.stop)`` of a unit's chunk stream, with provenance."""
    position = 0
    try:
        for chunk in chunks:
            lo, hi = max(piece.start, position), min(piece.stop, position + chunk.num_rows)
            if lo < hi:
                yield _with_provenance(chunk.slice(lo - position, hi - lo), piece.unit, lo)
            position += chunk.num_rows
            if position >= piece.stop:
                return
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {unit_label}: {exc}") from exc


class _PieceStreamer:
    """Streams pieces of files as tables of the requested columns (caches the open file)."""

    def __init__(
        self,
        kind: str,
        columns: Sequence[str] | None,
        csv_options: CsvOptions,
        read_chunk_rows: int,
    ) -> None:
        self.kind = kind
        self.columns = list(columns) if columns is not None else None
        self.csv_options = csv_options
        self.read_chunk_rows = read_chunk_rows
        self._parquet: tuple[str, pq.ParquetFile] | None = None

    def stream(self, piece: ReadPiece) -> Iterator[pa.Table]:
        """Tables covering exactly the piece's rows, in order."""
        if piece.num_rows <= 0:
            return iter(())
        if self.kind == PARQUET:
            return self._parquet_piece(piece)
        return self._csv_piece(piece)

    def _parquet_piece(self, piece: ReadPiece) -> Iterator[pa.Table]:
        unit = piece.unit
        if self._parquet is None or self._parquet[0] != unit.path:
            self._parquet = (unit.path, open_parquet(unit.path))
        pf = self._parquet[1]
        if self.columns is not None:
            check_columns(unit.path, pf.schema_arrow.names, self.columns)
        chunks = pf.iter_batches(
            batch_size=self.read_chunk_rows, row_groups=[unit.row_group], columns=self.columns
        )
        return _clip(chunks, piece, f"Parquet file {unit.path} (row group {unit.row_group})")

    def _csv_piece(self, piece: ReadPiece) -> Iterator[pa.Table]:
        path = piece.unit.path
        if self.columns is not None:
            check_columns(path, csv_header(path, self.csv_options), self.columns)
        reader = self.csv_options.open(path, self.columns)
        return _clip(iter(reader), piece, f"CSV file {path}")


# --------------------------------------------------------------------------------------------
# Batching and shuffling
# --------------------------------------------------------------------------------------------


def _concat(tables: list[pa.Table], paths: Sequence[str]) -> pa.Table:
    """Concatenate tables, promoting compatible types (int64 + double); clear error otherwise."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        file_ids = {i for t in tables for i in t.column(_SRC_FILE).unique().to_pylist()}
        files = ", ".join(paths[i] for i in sorted(file_ids))
        raise DataError(
            f"input files have incompatible column types ({files}): {exc}. "
            "For CSV files, pin the column types (csv_column_types)."
        ) from exc


def describe_source(table: pa.Table, paths: Sequence[str]) -> str:
    """Where the rows of ``table`` come from: ``path rows lo-hi`` per file (at most 3 files).

    ``lo`` and ``hi`` are the smallest and largest 0-based row index (in the file) among the
    batch's rows of that file (inclusive).
    """
    files = table.column(_SRC_FILE).to_numpy()
    rows = table.column(_SRC_ROW).to_numpy()
    parts = []
    unique = np.unique(files)
    for file_index in unique[:3]:
        file_rows = rows[files == file_index]
        parts.append(f"{paths[file_index]} rows {file_rows.min()}-{file_rows.max()}")
    if len(unique) > 3:
        parts.append(f"and {len(unique) - 3} more files")
    return ", ".join(parts)


class ChunkSource(str):
    """:func:`describe_source`'s text that can also name the file and row of each row of the
    chunk (``locate(i)``), for messages about one bad value."""

    paths: Sequence[str]
    files: np.ndarray
    rows: np.ndarray

    def __new__(cls, text: str, paths: Sequence[str], files: np.ndarray, rows: np.ndarray) -> "ChunkSource":
        source = super().__new__(cls, text)
        source.paths, source.files, source.rows = paths, files, rows
        return source

    def locate(self, i: int) -> str:
        """``path row N`` of the chunk's row ``i`` (0-based rows of the file)."""
        return f"{self.paths[int(self.files[i])]} row {int(self.rows[i])}"


def _finish(table: pa.Table, paths: Sequence[str]) -> tuple[pa.RecordBatch, str]:
    """Drop the provenance columns; return one contiguous RecordBatch and its source."""
    source = ChunkSource(describe_source(table, paths), paths, table.column(_SRC_FILE).to_numpy(),
                         table.column(_SRC_ROW).to_numpy())
    table = table.drop_columns([_SRC_FILE, _SRC_ROW]).combine_chunks()
    (batch,) = table.to_batches()  # one chunk per column after combine_chunks
    return batch, source


def _rebatch_in_order(
    tables: Iterator[pa.Table], batch_size: int, paths: Sequence[str]
) -> Iterator[pa.Table]:
    """Tables of exactly ``batch_size`` rows in stream order; the last may be shorter."""
    pending: list[pa.Table] = []
    buffered = 0
    for table in tables:
        pending.append(table)
        buffered += table.num_rows
        if buffered < batch_size:
            continue
        merged = _concat(pending, paths)
        start = 0
        while buffered - start >= batch_size:
            yield merged.slice(start, batch_size)
            start += batch_size
        pending, buffered = [merged.slice(start)], buffered - start
    if buffered:
        yield _concat(pending, paths)


def _rebatch_shuffled(
    tables: Iterator[pa.Table],
    batch_size: int,
    buffer_size: int,
    rng: np.random.Generator,
    paths: Sequence[str],
) -> Iterator[pa.Table]:
    """Tables of exactly ``batch_size`` shuffled rows; the last may be shorter.

    Rows accumulate until the buffer holds ``max(buffer_size, buffer_size // 2 + batch_size)``
    rows; then the buffer is permuted, full batches are emitted from its front and about
    ``buffer_size // 2`` rows are kept to mix with the following rows. At the end the rest is
    permuted and emitted. Memory: about ``buffer_size`` rows plus one read chunk.
    """
    keep = buffer_size // 2
    trigger = max(buffer_size, keep + batch_size, 1)
    pending: list[pa.Table] = []
    buffered = 0
    for table in tables:
        pending.append(table)
        buffered += table.num_rows
        if buffered < trigger:
            continue
        merged = _concat(pending, paths).take(rng.permutation(buffered))
        emit = (buffered - keep) // batch_size * batch_size
        for start in range(0, emit, batch_size):
            yield merged.slice(start, batch_size)
        pending, buffered = [merged.slice(emit)], buffered - emit
    if buffered:
        merged = _concat(pending, paths).take(rng.permutation(buffered))
        for start in range(0, buffered, batch_size):
            yield merged.slice(start, batch_size)


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


class StreamingReader:
    """Reads Parquet or CSV files as sharded, optionally shuffled, fixed-size record batches.

    Constructing it expands ``paths``, reads every file's metadata (CSV files are streamed once
    to count their rows) and checks that every file has ``columns``; it is cheap to pickle
    (no open files) so it can be sent to DataLoader workers.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        columns: Sequence[str] | None = None,
        dataset_type: int | str = PARQUET,
        batch_size: int = 1024,
        shuffle: bool = False,
        shuffle_buffer_size: int = 32768,
        drop_remainder: bool = False,
        csv_delimiter: str = ",",
        csv_column_types: Mapping[str, pa.DataType] | None = None,
        seed: int = 0,
        read_chunk_rows: int = 65536,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(csv_delimiter) != 1:
            raise ValueError(f"csv_delimiter must be one character, got {csv_delimiter!r}")
        self.dataset_type = normalize_dataset_type(dataset_type)
        self.paths = expand_input_paths(paths, DATA_SUFFIXES[self.dataset_type])
        self.columns = list(columns) if columns is not None else None
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.shuffle_buffer_size = int(shuffle_buffer_size)
        self.drop_remainder = bool(drop_remainder)
        self.csv_options = CsvOptions(csv_delimiter, dict(csv_column_types or {}))
        self.seed = int(seed)
        self.read_chunk_rows = int(read_chunk_rows)
        self.units = list_work_units(self.paths, self.dataset_type, self.columns, self.csv_options)

    @property
    def num_rows(self) -> int:
        """Rows in all files."""
        return sum(u.num_rows for u in self.units)

    def plan(self, epoch: int, num_readers: int) -> list[list[ReadPiece]]:
        """Pieces of every reader for ``epoch`` (see :func:`plan_epoch`)."""
        return plan_epoch(self.units, num_readers, self.seed, epoch, self.shuffle)

    def reader_num_rows(self, num_readers: int) -> list[int]:
        """Rows of each reader (the same every epoch)."""
        return [hi - lo for lo, hi in reader_row_ranges(self.num_rows, num_readers)]

    def reader_num_batches(self, num_readers: int) -> list[int]:
        """Batches each reader yields per epoch (the same every epoch)."""
        return [
            batches_for_rows(rows, self.batch_size, self.drop_remainder)
            for rows in self.reader_num_rows(num_readers)
        ]

    def iter_batches(
        self,
        epoch: int = 0,
        reader_index: int = 0,
        num_readers: int = 1,
        skip_batches: int = 0,
        stride: int = 1,
        offset: int = 0,
    ) -> Iterator[tuple[pa.RecordBatch, str]]:
        """Yield ``(batch, source)`` of one reader for one epoch, skipping the first batches.

        ``source`` names the files and row spans the batch's rows come from, for errors.
        ``stride`` / ``offset``: only the batches numbered ``offset, offset + stride, ...`` (from
        0 in the epoch, after the skipped ones too) are yielded; the others are read but not
        finished (how DataLoader workers share one reader's batches in order).
        """
        if stride < 1 or not 0 <= offset < stride:
            raise ValueError(f"offset {offset} out of range for stride {stride}")
        if not 0 <= reader_index < num_readers:
            raise ValueError(f"reader_index {reader_index} out of range for {num_readers} readers")
        pieces = self.plan(epoch, num_readers)[reader_index]
        total_rows = sum(p.num_rows for p in pieces)
        limit = batches_for_rows(total_rows, self.batch_size, self.drop_remainder)
        if skip_batches >= limit:
            return
        emitted = 0
        if self.shuffle:
            rng = np.random.default_rng(
                [self.seed, int(epoch), int(reader_index), int(num_readers), _ROW_SHUFFLE_SALT]
            )
            tables = _rebatch_shuffled(
                self._stream(pieces), self.batch_size, self.shuffle_buffer_size, rng, self.paths
            )
            to_skip = skip_batches
        else:
            # Without shuffle the batches are consecutive rows: skip whole rows, unread.
            pieces = _drop_leading_rows(pieces, skip_batches * self.batch_size)
            emitted = skip_batches
            tables = _rebatch_in_order(self._stream(pieces), self.batch_size, self.paths)
            to_skip = 0
        for table in tables:
            if emitted >= limit:
                return
            number = emitted
            emitted += 1
            if to_skip:
                to_skip -= 1
                continue
            if number % stride == offset:
                yield _finish(table, self.paths)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        """Batches of epoch 0 for a single reader (convenience)."""
        for batch, _ in self.iter_batches():
            yield batch

    def _stream(self, pieces: Sequence[ReadPiece]) -> Iterator[pa.Table]:
        streamer = _PieceStreamer(
            self.dataset_type, self.columns, self.csv_options, self.read_chunk_rows
        )
        for piece in pieces:
            yield from streamer.stream(piece)


def _drop_leading_rows(pieces: Sequence[ReadPiece], rows: int) -> list[ReadPiece]:
    """``pieces`` without their first ``rows`` rows."""
    out = []
    for piece in pieces:
        if rows >= piece.num_rows:
            rows -= piece.num_rows
            continue
        out.append(ReadPiece(piece.unit, piece.start + rows, piece.stop))
        rows = 0
    return out
