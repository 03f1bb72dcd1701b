"""Streaming Parquet / CSV reader, sharded across readers, shuffled, resumable.

Vocabulary:

- A *work unit* is a Parquet row group or a whole CSV file (:class:`WorkUnit`); its row count
  is known up front (Parquet metadata; CSV files are counted once by streaming them).
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

import glob
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recframe.errors import RecframeError, close_matches

PARQUET = "ParquetDataset"
CSV = "CsvDataset"

_DATA_SUFFIXES = {PARQUET: (".parquet",), CSV: (".csv",)}
_ALL_SUFFIXES = (".parquet", ".csv")
# Hidden columns that carry each row's provenance through the shuffle buffer.
_SRC_FILE = "__recframe_src_file__"
_SRC_ROW = "__recframe_src_row__"
# Salt separating the row-buffer seed stream from the unit-order seed stream.
_ROW_SHUFFLE_SALT = 0x5EED


class DataError(RecframeError, ValueError):
    """An input file cannot be used: missing, unreadable, or lacking a requested column."""


class InputPathNotFoundError(DataError, FileNotFoundError):
    """No file matches an input path specification."""


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def expand_input_paths(
    spec: str | os.PathLike | Sequence[str | os.PathLike],
    suffixes: Sequence[str] = _ALL_SUFFIXES,
) -> list[str]:
    """Expand an input path spec into a sorted, deduplicated list of files.

    ``spec`` is a comma-separated string (or a list of such strings) of files, directories
    (every file ending in one of ``suffixes`` directly inside, sorted) and glob patterns.
    Raises :class:`InputPathNotFoundError` naming the spec (and the part) that matched nothing.
    """
    parts = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    parts = [os.fspath(p) for p in parts]
    items = [p.strip() for part in parts for p in part.split(",") if p.strip()]
    if not items:
        raise InputPathNotFoundError(f"input path spec {spec!r} names no file")
    found: set[str] = set()
    for item in items:
        matches = _expand_one(os.path.expanduser(item), tuple(suffixes))
        if not matches:
            raise InputPathNotFoundError(
                f"input path {item!r} (in spec {spec!r}) matches no file"
                + (f" ending in {', '.join(suffixes)}" if os.path.isdir(item) else "")
            )
        found.update(matches)
    return sorted(found)


def _expand_one(item: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files named by one spec item: a file, a directory or a glob pattern."""
    if os.path.isdir(item):
        return [
            os.path.join(item, name)
            for name in sorted(os.listdir(item))
            if name.endswith(suffixes) and os.path.isfile(os.path.join(item, name))
        ]
    if os.path.isfile(item):
        return [item]
    if glob.has_magic(item):
        matches = []
        for path in sorted(glob.glob(item, recursive=True)):
            if os.path.isdir(path):
                matches.extend(_expand_one(path, suffixes))
            elif os.path.isfile(path):
                matches.append(path)
        return matches
    return []


def normalize_dataset_type(dataset_type: int | str) -> str:
    """``"ParquetDataset"`` or ``"CsvDataset"`` from a DatasetType enum value or name.

    Also accepts ``"parquet"`` / ``"csv"`` (any case).
    """
    if isinstance(dataset_type, (int, np.integer)) and not isinstance(dataset_type, bool):
        names = {0: PARQUET, 1: CSV}
        if int(dataset_type) in names:
            return names[int(dataset_type)]
    elif isinstance(dataset_type, str):
        lowered = dataset_type.lower()
        if lowered in ("parquetdataset", "parquet"):
            return PARQUET
        if lowered in ("csvdataset", "csv"):
            return CSV
    raise ValueError(
        f"unknown dataset_type {dataset_type!r}: expected ParquetDataset (0) or CsvDataset (1)"
    )


# --------------------------------------------------------------------------------------------
# Work units and the per-epoch plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkUnit:
    """A Parquet row group (``row_group`` set) or a whole CSV file (``row_group is None``).

    ``file_row_offset`` is the index of the unit's first row within its file.
    """

    file_index: int
    path: str
    row_group: int | None
    num_rows: int
    file_row_offset: int = 0


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
# Schema checks and file opening
# --------------------------------------------------------------------------------------------


def check_columns(path: str, available: Sequence[str], requested: Sequence[str]) -> None:
    """Raise :class:`DataError` naming ``path`` and the first requested column it lacks."""
    have = set(available)
    for column in requested:
        if column not in have:
            close = close_matches(column, available, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise DataError(
                f"{path}: column {column!r} not found{hint} "
                f"(available columns: {', '.join(available)})"
            )


def _open_parquet(path: str) -> pq.ParquetFile:
    """Open a Parquet file, turning any failure into a :class:`DataError` naming it."""
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read Parquet file {path}: {exc}") from exc


@dataclass(frozen=True)
class CsvOptions:
    """How CSV files are parsed: delimiter and optional explicit column types."""

    delimiter: str = ","
    column_types: Mapping[str, pa.DataType] = field(default_factory=dict)
    block_size: int = 1 << 20

    def open(self, path: str, columns: Sequence[str] | None) -> pacsv.CSVStreamingReader:
        """A streaming reader over ``path`` limited to ``columns`` (None = all)."""
        types = dict(self.column_types)
        if columns is not None:
            types = {k: v for k, v in types.items() if k in columns}
        convert = pacsv.ConvertOptions(
            include_columns=list(columns) if columns is not None else None,
            column_types=types,
        )
        try:
            return pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=self.block_size),
                parse_options=pacsv.ParseOptions(delimiter=self.delimiter),
                convert_options=convert,
            )
        except Exception as exc:
            raise DataError(f"cannot read CSV file {path}: {exc}") from exc


def _csv_header(path: str, options: CsvOptions) -> list[str]:
    """Column names of a CSV file (its header line, split by the delimiter)."""
    try:
        header = pacsv.read_csv(
            _first_line(path),
            parse_options=pacsv.ParseOptions(delimiter=options.delimiter),
        )
    except Exception as exc:
        raise DataError(f"cannot read the header of CSV file {path}: {exc}") from exc
    return header.column_names


def _first_line(path: str) -> pa.BufferReader:
    """The first line of a file as an in-memory stream."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError as exc:
        raise DataError(f"cannot read CSV file {path}: {exc}") from exc
    if not line.strip():
        raise DataError(f"CSV file {path} is empty: expected a header line")
    return pa.BufferReader(line)


def _count_csv_rows(path: str, options: CsvOptions, first_column: str) -> int:
    """Rows of a CSV file, by streaming one column as strings."""
    counting = CsvOptions(options.delimiter, {first_column: pa.string()}, options.block_size)
    rows = 0
    reader = counting.open(path, [first_column])
    try:
        for chunk in reader:
            rows += chunk.num_rows
    except Exception as exc:
        raise DataError(f"cannot read CSV file {path}: {exc}") from exc
    return rows


def list_work_units(
    paths: Sequence[str],
    dataset_type: int | str,
    columns: Sequence[str] | None,
    csv_options: CsvOptions | None = None,
) -> list[WorkUnit]:
    """The work units of ``paths`` with their row counts; checks every file has ``columns``."""
    kind = normalize_dataset_type(dataset_type)
    csv_options = csv_options or CsvOptions()
    units: list[WorkUnit] = []
    for file_index, path in enumerate(paths):
        if kind == PARQUET:
            units.extend(_parquet_units(file_index, path, columns))
        else:
            header = _csv_header(path, csv_options)
            check_columns(path, header, columns or [])
            rows = _count_csv_rows(path, csv_options, header[0])
            units.append(WorkUnit(file_index, path, None, rows, 0))
    return units


def _parquet_units(file_index: int, path: str, columns: Sequence[str] | None) -> list[WorkUnit]:
    """One unit per row group of a Parquet file."""
    pf = _open_parquet(path)
    check_columns(path, pf.schema_arrow.names, columns or [])
    units, offset = [], 0
    for rg in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(rg).num_rows
        units.append(WorkUnit(file_index, path, rg, rows, offset))
        offset += rows
    return units


def file_columns(path: str, dataset_type: int | str, csv_delimiter: str = ",") -> list[str]:
    """Column names of one input file."""
    if normalize_dataset_type(dataset_type) == PARQUET:
        return list(_open_parquet(path).schema_arrow.names)
    return _csv_header(path, CsvOptions(csv_delimiter))


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
            self._parquet = (unit.path, _open_parquet(unit.path))
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
            check_columns(path, _csv_header(path, self.csv_options), self.columns)
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


def _finish(table: pa.Table, paths: Sequence[str]) -> tuple[pa.RecordBatch, str]:
    """Drop the provenance columns; return one contiguous RecordBatch and its source."""
    source = describe_source(table, paths)
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
        self.paths = expand_input_paths(paths, _DATA_SUFFIXES[self.dataset_type])
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
    ) -> Iterator[tuple[pa.RecordBatch, str]]:
        """Yield ``(batch, source)`` of one reader for one epoch, skipping the first batches.

        ``source`` names the files and row spans the batch's rows come from, for errors.
        """
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
            emitted += 1
            if to_skip:
                to_skip -= 1
                continue
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


def count_rows(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    dataset_type: int | str = PARQUET,
    csv_delimiter: str = ",",
) -> int:
    """Rows in the files of ``paths`` (Parquet: metadata only; CSV: streamed)."""
    kind = normalize_dataset_type(dataset_type)
    files = expand_input_paths(paths, _DATA_SUFFIXES[kind])
    units = list_work_units(files, kind, None, CsvOptions(csv_delimiter))
    return sum(u.num_rows for u in units)
