"""Tests of recframe.data.inputs and recframe.data.reader: paths, sharding plan, batching, shuffle, errors, resume."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recframe.data.inputs import DataError, InputPathNotFoundError, WorkUnit, count_rows, expand_input_paths
from recframe.data.reader import StreamingReader, plan_epoch


def write_parquet(path, ids, row_group_size=None) -> str:
    """A Parquet file with ``id`` (int64), ``score`` = id / 2 and ``tags`` = "t<id>|x"."""
    ids = np.asarray(ids, dtype=np.int64)
    table = pa.table(
        {"id": ids, "score": ids / 2.0, "tags": [f"t{i}|x" for i in ids]}
    )
    pq.write_table(table, str(path), row_group_size=row_group_size or max(len(ids), 1))
    return str(path)


def ids_of(batches) -> list[int]:
    """The ``id`` values of a sequence of ``(batch, source)`` or batches, concatenated."""
    out: list[int] = []
    for item in batches:
        batch = item[0] if isinstance(item, tuple) else item
        out.extend(batch.column("id").to_pylist())
    return out


def read_all(reader: StreamingReader, epoch: int, num_readers: int) -> list[list[int]]:
    """Ids read by each reader in one epoch."""
    return [ids_of(reader.iter_batches(epoch, r, num_readers)) for r in range(num_readers)]


@pytest.fixture
def three_files(tmp_path):
    """Ids 0..99 in three files: [0, 40) in row groups of 15, [40, 45) of 5, [45, 100) of 20."""
    data = tmp_path / "data"
    data.mkdir()
    write_parquet(data / "a.parquet", range(0, 40), 15)
    write_parquet(data / "b.parquet", range(40, 45), 5)
    write_parquet(data / "c.parquet", range(45, 100), 20)
    return data


# ---- paths ------------------------------------------------------------------------------------


def test_expand_input_paths_comma_dir_glob_dedup(tmp_path):
    a = write_parquet(tmp_path / "a.parquet", [1])
    sub = tmp_path / "sub"
    sub.mkdir()
    b = write_parquet(sub / "b.parquet", [2])
    c = write_parquet(sub / "c.parquet", [3])
    (sub / "_SUCCESS").write_text("")
    spec = f"{sub}, {tmp_path}/*.parquet,{a},{sub}/c*.parquet"
    assert expand_input_paths(spec) == sorted([a, b, c])
    assert expand_input_paths([str(sub)]) == [b, c]


def test_expand_input_paths_errors_name_the_spec(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        expand_input_paths(f"{tmp_path}/nothing_here/*.parquet")
    write_parquet(tmp_path / "a.parquet", [1])
    with pytest.raises(InputPathNotFoundError, match="missing.parquet"):
        expand_input_paths(f"{tmp_path}/a.parquet,{tmp_path}/missing.parquet")
    with pytest.raises(InputPathNotFoundError, match="no file"):
        expand_input_paths(" , ")


# ---- plan -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[7], [1], [3, 0, 9, 1], [100, 1, 1, 1], [5] * 9])
@pytest.mark.parametrize("num_readers", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("shuffle", [False, True])
def test_plan_covers_every_row_once_and_balances(sizes, num_readers, shuffle):
    units = [WorkUnit(i, f"f{i}", 0, n) for i, n in enumerate(sizes)]
    plan = plan_epoch(units, num_readers, seed=3, epoch=1, shuffle=shuffle)
    seen = [
        (p.unit.file_index, row)
        for pieces in plan
        for p in pieces
        for row in range(p.start, p.stop)
    ]
    assert sorted(seen) == [(i, r) for i, n in enumerate(sizes) for r in range(n)]
    counts = [sum(p.num_rows for p in pieces) for pieces in plan]
    assert max(counts) - min(counts) <= 1
    assert sum(counts) == sum(sizes)


# ---- exactly once, order, batch sizes -------------------------------------------------------


@pytest.mark.parametrize("num_readers", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_read_exactly_once(three_files, num_readers, shuffle):
    reader = StreamingReader(
        three_files, columns=["id"], batch_size=7, shuffle=shuffle, shuffle_buffer_size=16
    )
    per_reader = read_all(reader, epoch=2, num_readers=num_readers)
    assert sorted(i for ids in per_reader for i in ids) == list(range(100))
    sizes = [len(ids) for ids in per_reader]
    assert max(sizes) - min(sizes) <= 1


def test_single_row_group_split_among_three_readers(tmp_path):
    write_parquet(tmp_path / "one.parquet", range(10))
    reader = StreamingReader(tmp_path, columns=["id"], batch_size=4, shuffle=False)
    assert len(reader.units) == 1
    assert read_all(reader, 0, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert reader.reader_num_batches(3) == [1, 1, 1]


def test_no_shuffle_preserves_file_and_row_order(three_files):
    reader = StreamingReader(three_files, columns=["id", "score"], batch_size=8, shuffle=False)
    batches = [b for b, _ in reader.iter_batches()]
    assert ids_of(batches) == list(range(100))
    assert [b.num_rows for b in batches] == [8] * 12 + [4]
    assert batches[1].column("score").to_pylist() == [i / 2.0 for i in range(8, 16)]
    assert batches[0].schema.names == ["id", "score"]
    # The same for every epoch.
    assert read_all(reader, 5, 2) == [list(range(50)), list(range(50, 100))]


@pytest.mark.parametrize("shuffle", [False, True])
def test_batch_sizes_and_drop_remainder(three_files, shuffle):
    kwargs = dict(columns=["id"], batch_size=16, shuffle=shuffle, shuffle_buffer_size=32)
    keep = StreamingReader(three_files, **kwargs)
    sizes = [[b.num_rows for b, _ in keep.iter_batches(0, r, 2)] for r in range(2)]
    assert sizes == [[16, 16, 16, 2], [16, 16, 16, 2]]
    assert keep.reader_num_batches(2) == [4, 4]
    drop = StreamingReader(three_files, drop_remainder=True, **kwargs)
    sizes = [[b.num_rows for b, _ in drop.iter_batches(0, r, 2)] for r in range(2)]
    assert sizes == [[16, 16, 16], [16, 16, 16]]
    assert drop.reader_num_batches(2) == [3, 3]
    # Dropped rows are the last ones of each reader in order (no shuffle).
    if not shuffle:
        assert read_all(drop, 0, 2) == [list(range(48)), list(range(50, 98))]


# ---- shuffle --------------------------------------------------------------------------------


def test_shuffle_is_seeded_per_epoch(three_files):
    def order(seed, epoch):
        reader = StreamingReader(
            three_files, columns=["id"], batch_size=10, shuffle=True,
            shuffle_buffer_size=32, seed=seed,
        )
        return read_all(reader, epoch, 2)

    first = order(seed=1, epoch=0)
    assert order(seed=1, epoch=0) == first
    assert order(seed=1, epoch=1) != first
    assert order(seed=2, epoch=0) != first
    flat = [i for ids in first for i in ids]
    assert sorted(flat) == list(range(100))
    assert flat != sorted(flat)


def test_shuffle_buffer_mixes_rows_within_a_row_group(tmp_path):
    write_parquet(tmp_path / "one.parquet", range(200))
    reader = StreamingReader(
        tmp_path, columns=["id"], batch_size=50, shuffle=True, shuffle_buffer_size=200
    )
    first_batch = next(reader.iter_batches())[0].column("id").to_numpy()
    # A 200-row buffer over one row group: the first batch draws from the whole file.
    assert first_batch.max() >= 100 and first_batch.min() < 100


# ---- resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_remainder", [False, True])
def test_skip_batches_yields_the_tail(three_files, shuffle, drop_remainder):
    reader = StreamingReader(
        three_files, columns=["id"], batch_size=6, shuffle=shuffle,
        shuffle_buffer_size=20, drop_remainder=drop_remainder, seed=9,
    )
    full = [b.column("id").to_pylist() for b, _ in reader.iter_batches(3, 1, 2)]
    assert len(full) == reader.reader_num_batches(2)[1]
    for skip in [0, 1, 4, len(full) - 1, len(full), len(full) + 3]:
        tail = [b.column("id").to_pylist() for b, _ in reader.iter_batches(3, 1, 2, skip)]
        assert tail == full[skip:]


# ---- errors ---------------------------------------------------------------------------------


def test_missing_column_error_names_file_column_and_suggestion(three_files):
    with pytest.raises(DataError) as info:
        StreamingReader(three_files, columns=["id", "scores"])
    message = str(info.value)
    assert "a.parquet" in message
    assert "'scores'" in message
    assert "did you mean 'score'" in message
    assert "available columns: id, score, tags" in message


def test_missing_column_error_in_one_of_several_files(tmp_path):
    write_parquet(tmp_path / "a.parquet", range(3))
    pq.write_table(pa.table({"user": [1]}), str(tmp_path / "b.parquet"))
    with pytest.raises(DataError, match=r"b\.parquet: column 'id' not found"):
        StreamingReader(tmp_path, columns=["id"])


def test_corrupt_parquet_error_names_file(tmp_path):
    write_parquet(tmp_path / "a.parquet", range(3))
    (tmp_path / "broken.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="broken.parquet"):
        StreamingReader(tmp_path, columns=["id"])
    with pytest.raises(DataError, match="broken.parquet"):
        count_rows(tmp_path)


def test_unreadable_csv_error_names_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,score\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match="bad.csv"):
        StreamingReader(bad, columns=["id"], dataset_type="csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv"):
        StreamingReader(empty, columns=["id"], dataset_type="csv")


# ---- CSV ------------------------------------------------------------------------------------


def test_csv_delimiter_columns_and_list_strings(tmp_path):
    lines = ["id\tscore\ttags"] + [f"{i}\t{i / 2}\t{i}|{i + 1}" for i in range(10)]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    lines = ["id\tscore\ttags"] + [f"{i}\t{i / 2}\t{i}|{i + 1}" for i in range(10, 13)]
    (tmp_path / "b.csv").write_text("\n".join(lines) + "\n")
    reader = StreamingReader(
        tmp_path, columns=["tags", "id"], dataset_type=1, batch_size=4, shuffle=False,
        csv_delimiter="\t",
    )
    batches = [b for b, _ in reader.iter_batches()]
    assert [b.num_rows for b in batches] == [4, 4, 4, 1]
    assert batches[0].schema.names == ["tags", "id"]
    assert batches[0].column("tags").to_pylist() == ["0|1", "1|2", "2|3", "3|4"]
    assert ids_of(batches) == list(range(13))
    # The batch spanning both files carries both files' ids.
    assert batches[2].column("id").to_pylist() == [8, 9, 10, 11]
    assert count_rows(tmp_path, "CsvDataset", "\t") == 13
    # Rows of one CSV file are split among readers.
    assert read_all(reader, 0, 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11, 12]]


def test_csv_column_types_pin_inference(tmp_path):
    (tmp_path / "a.csv").write_text("id,hist\n1,5\n2,7\n")
    (tmp_path / "b.csv").write_text("id,hist\n3,5|6\n")
    reader = StreamingReader(
        tmp_path, columns=["id", "hist"], dataset_type="csv", batch_size=3, shuffle=False,
        csv_column_types={"hist": pa.string()},
    )
    (batch, source), = list(reader.iter_batches())
    assert batch.column("hist").to_pylist() == ["5", "7", "5|6"]
    assert "a.csv rows 0-1" in source and "b.csv rows 0-0" in source
    unpinned = StreamingReader(
        tmp_path, columns=["id", "hist"], dataset_type="csv", batch_size=3, shuffle=False
    )
    with pytest.raises(DataError, match="incompatible column types"):
        list(unpinned.iter_batches())


# ---- misc -----------------------------------------------------------------------------------


def test_count_rows_and_source(three_files):
    assert count_rows(str(three_files)) == 100
    assert count_rows(f"{three_files}/a.parquet,{three_files}/b.parquet") == 45
    reader = StreamingReader(three_files, columns=["id"], batch_size=10, shuffle=False)
    sources = [s for _, s in reader.iter_batches()]
    assert sources[0] == f"{os.path.join(three_files, 'a.parquet')} rows 0-9"
    assert "a.parquet rows 30-39" in sources[3] and sources[3].count("parquet") == 1
    assert "b.parquet rows 0-4" in sources[4] and "c.parquet rows 0-4" in sources[4]
