"""Input files: path specs, file types, column checks, and the work units of the files.

A path spec is a comma-separated string (or list) of files, directories and glob patterns
(:func:`expand_input_paths`). A *work unit* is a Parquet row group or a whole CSV file
(:class:`WorkUnit`); its row count is known up front (Parquet metadata; CSV files are counted
once by streaming them). :mod:`recframe.data.reader` shards, shuffles and batches them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recframe.errors import RecframeError, close_matches

PARQUET = "ParquetDataset"
CSV = "CsvDataset"

DATA_SUFFIXES = {PARQUET: (".parquet",), CSV: (".csv",)}
ALL_SUFFIXES = (".parquet", ".csv")


class DataError(RecframeError, ValueError):
    """An input file cannot be used: missing, unreadable, or lacking a requested column."""


class InputPathNotFoundError(DataError, FileNotFoundError):
    """No file matches an input path specification."""


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def expand_input_paths(
    spec: str | os.PathLike | Sequence[str | os.PathLike],
    suffixes: Sequence[str] = ALL_SUFFIXES,
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


def open_parquet(path: str) -> pq.ParquetFile:
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


def csv_header(path: str, options: CsvOptions) -> list[str]:
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
            header = csv_header(path, csv_options)
            check_columns(path, header, columns or [])
            rows = _count_csv_rows(path, csv_options, header[0])
            units.append(WorkUnit(file_index, path, None, rows, 0))
    return units


def _parquet_units(file_index: int, path: str, columns: Sequence[str] | None) -> list[WorkUnit]:
    """One unit per row group of a Parquet file."""
    pf = open_parquet(path)
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
        return list(open_parquet(path).schema_arrow.names)
    return csv_header(path, CsvOptions(csv_delimiter))


def count_rows(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    dataset_type: int | str = PARQUET,
    csv_delimiter: str = ",",
) -> int:
    """Rows in the files of ``paths`` (Parquet: metadata only; CSV: streamed)."""
    kind = normalize_dataset_type(dataset_type)
    files = expand_input_paths(paths, DATA_SUFFIXES[kind])
    units = list_work_units(files, kind, None, CsvOptions(csv_delimiter))
    return sum(u.num_rows for u in units)
