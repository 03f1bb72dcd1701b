"""Tests of recframe.data.dataset: sharding across ranks x workers, DataLoader, resume."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import recframe.data.dataset as dataset_module
from recframe.batch import Batch
from recframe.data import (
    DataState,
    RecordBatchDataset,
    count_rows,
    create_dataloader,
    round_robin_skips,
)
from recframe.protos import data_pb2


def write_parquet(path, ids, row_group_size=None) -> str:
    """A Parquet file with ``id`` (int64) and ``label`` = id % 2."""
    ids = np.asarray(ids, dtype=np.int64)
    table = pa.table({"id": ids, "label": (ids % 2).astype(np.float32)})
    pq.write_table(table, str(path), row_group_size=row_group_size or max(len(ids), 1))
    return str(path)


def ids_parse(batch: pa.RecordBatch, source: str) -> list[int]:
    """A parse_fn returning the ids of the batch."""
    return batch.column("id").to_pylist()


def make_dataset(path, **kwargs) -> RecordBatchDataset:
    options = dict(columns=["id"], parse_fn=ids_parse, batch_size=4, shuffle=False)
    options.update(kwargs)
    return RecordBatchDataset(path, **options)


def run_loader(dataset: RecordBatchDataset, num_workers: int) -> list[list[int]]:
    """The parsed batches of one pass of a real DataLoader."""
    return list(create_dataloader(dataset, num_workers))


def emulate_loader(dataset: RecordBatchDataset, num_workers: int, monkeypatch) -> list:
    """One pass as a DataLoader with ``num_workers`` workers would give it, in-process:
    each worker's iterator, visited round-robin, exhausted workers skipped."""
    if num_workers == 0:
        return list(dataset)
    iterators = []
    for worker in range(num_workers):
        info = SimpleNamespace(id=worker, num_workers=num_workers, dataset=dataset)
        monkeypatch.setattr(dataset_module, "get_worker_info", lambda info=info: info)
        iterators.append(iter(list(dataset)))
    monkeypatch.undo()
    out, active = [], list(range(num_workers))
    while active:
        for worker in list(active):
            item = next(iterators[worker], None)
            if item is None:
                active.remove(worker)
            else:
                out.append(item)
    return out


@pytest.fixture
def files(tmp_path):
    """Ids 0..60 over two files: [0, 25) in row groups of 10, [25, 61) in one row group."""
    write_parquet(tmp_path / "a.parquet", range(0, 25), 10)
    write_parquet(tmp_path / "b.parquet", range(25, 61))
    return tmp_path


# ---- exactly once ---------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_every_row_once_per_epoch_across_ranks_and_workers(files, world_size, num_workers):
    seen = []
    for rank in range(world_size):
        dataset = make_dataset(
            files, shuffle=True, shuffle_buffer_size=8, rank=rank, world_size=world_size, seed=4
        )
        dataset.set_epoch(1)
        batches = run_loader(dataset, num_workers)
        assert len(batches) == len(dataset) == dataset.num_batches()
        assert all(len(b) == 4 for b in batches[: -max(num_workers, 1)])
        seen.extend(i for batch in batches for i in batch)
    assert sorted(seen) == list(range(61))


@pytest.mark.parametrize("world_size,num_workers", [(3, 0), (1, 3), (3, 2)])
def test_one_row_group_shared_by_more_readers(tmp_path, world_size, num_workers, monkeypatch):
    write_parquet(tmp_path / "one.parquet", range(10))
    seen = []
    for rank in range(world_size):
        dataset = make_dataset(tmp_path, batch_size=2, rank=rank, world_size=world_size)
        batches = emulate_loader(dataset, num_workers, monkeypatch)
        seen.append([i for batch in batches for i in batch])
    assert sorted(i for ids in seen for i in ids) == list(range(10))
    readers = world_size * max(num_workers, 1)
    sizes = [len(ids) for ids in seen]
    assert max(sizes) - min(sizes) <= max(num_workers, 1)
    assert sum(sizes) == 10 and readers >= 3  # fewer row groups (1) than readers


def test_no_shuffle_single_reader_preserves_order(files):
    batches = run_loader(make_dataset(files, batch_size=7), 0)
    assert [i for b in batches for i in b] == list(range(61))
    assert [len(b) for b in batches] == [7] * 8 + [5]


def test_shuffle_same_seed_same_order_other_epoch_other_order(files):
    def order(epoch: int, seed: int = 1) -> list[list[int]]:
        dataset = make_dataset(files, shuffle=True, shuffle_buffer_size=16, seed=seed)
        dataset.set_epoch(epoch)
        return run_loader(dataset, 0)

    assert order(0) == order(0)
    assert order(1) != order(0)
    assert order(0, seed=2) != order(0)
    assert sorted(i for b in order(1) for i in b) == list(range(61))


def test_drop_remainder_with_workers(files, monkeypatch):
    dataset = make_dataset(files, batch_size=8, drop_remainder=True)
    batches = emulate_loader(dataset, 2, monkeypatch)
    # Readers own rows [0, 30) and [30, 61): 3 full batches each, remainders dropped.
    assert batches == [
        list(range(0, 8)), list(range(30, 38)),
        list(range(8, 16)), list(range(38, 46)),
        list(range(16, 24)), list(range(46, 54)),
    ]
    assert dataset.num_batches(2) == 6


# ---- real DataLoader workers ----------------------------------------------------------------


def test_dataloader_interleaving_matches_round_robin_model(tmp_path, monkeypatch):
    # 25 rows, batch 4, 2 workers: 12 rows (3 batches) and 13 rows (4 batches).
    write_parquet(tmp_path / "a.parquet", range(25), 5)
    dataset = make_dataset(tmp_path)
    expected = emulate_loader(dataset, 2, monkeypatch)
    assert dataset.worker_num_batches(2) == [3, 4]
    assert run_loader(dataset, 2) == expected
    assert expected[-1] == [24]


def test_parse_fn_builds_batches_in_workers(files):
    def parse(batch: pa.RecordBatch, source: str) -> Batch:
        assert "parquet rows" in source
        ids = torch.from_numpy(batch.column("id").to_numpy())
        labels = torch.from_numpy(batch.column("label").to_numpy())
        return Batch(batch_size=len(ids), labels={"label": labels}, item_key=ids,
                     extra={"worker": torch.utils.data.get_worker_info().id})

    dataset = make_dataset(files, columns=["id", "label"], parse_fn=parse, batch_size=16)
    batches = run_loader(dataset, 2)
    assert [b.extra["worker"] for b in batches] == [0, 1, 0, 1]
    ids = torch.cat([b.item_key for b in batches])
    assert sorted(ids.tolist()) == list(range(61))
    labels = torch.cat([b.labels["label"] for b in batches])
    assert torch.equal(labels, (ids % 2).float())


# ---- resume ---------------------------------------------------------------------------------


def brute_force_skips(n: int, counts: list[int]) -> tuple[list[int], int]:
    """Reference for round_robin_skips: visit workers one by one."""
    skips, taken, last = [0] * len(counts), 0, -1
    for worker in itertools.cycle(range(len(counts))):
        if taken == n or all(s == c for s, c in zip(skips, counts)):
            break
        if skips[worker] < counts[worker]:
            skips[worker] += 1
            taken += 1
            last = worker
    return skips, (last + 1) % len(counts)


@pytest.mark.parametrize("counts", [[3], [3, 4], [4, 3], [0, 2, 5], [5, 1, 3], [2, 2, 2]])
def test_round_robin_skips_matches_brute_force(counts):
    for n in range(sum(counts) + 2):
        assert round_robin_skips(n, counts) == brute_force_skips(n, counts)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_yields_the_tail_of_the_epoch(tmp_path, num_workers, shuffle):
    # 25 rows, batch 4: with 2 workers the readers yield 3 and 4 batches (one runs out first).
    write_parquet(tmp_path / "a.parquet", range(13), 5)
    write_parquet(tmp_path / "b.parquet", range(13, 25), 6)
    dataset = make_dataset(tmp_path, shuffle=shuffle, shuffle_buffer_size=6, seed=5)
    dataset.set_epoch(2)
    full = run_loader(dataset, num_workers)
    assert sorted(i for b in full for i in b) == list(range(25))
    for n in ([1, 3, 6, 7] if num_workers else [1, 3, 7]):
        resumed = make_dataset(tmp_path, shuffle=shuffle, shuffle_buffer_size=6, seed=5)
        resumed.load_state(DataState(epoch=2, batches_consumed=n, num_workers=num_workers))
        loader = create_dataloader(resumed, num_workers)
        assert len(loader) == len(full) - n
        assert list(loader) == full[n:], n


def test_resume_tail_for_every_start_emulated(files, monkeypatch):
    dataset = make_dataset(
        files, shuffle=True, shuffle_buffer_size=10, batch_size=3, world_size=2, rank=1
    )
    full = emulate_loader(dataset, 3, monkeypatch)
    for n in range(len(full) + 1):
        dataset.set_start_batch(n)
        assert emulate_loader(dataset, 3, monkeypatch) == full[n:]


def test_set_epoch_resets_the_start_batch(files):
    dataset = make_dataset(files)
    dataset.set_epoch(3)
    dataset.set_start_batch(5)
    dataset.set_epoch(3)
    assert dataset.start_batch == 5
    dataset.set_epoch(4)
    assert dataset.start_batch == 0
    assert dataset.state(7) == DataState(epoch=4, batches_consumed=7, world_size=1, num_workers=0)
    assert DataState.from_dict(dataset.state(7).to_dict()) == dataset.state(7)


def test_resume_checks_world_size_and_workers(files):
    dataset = make_dataset(files, world_size=2)
    with pytest.raises(ValueError, match="world_size 1"):
        dataset.load_state(DataState(epoch=0, batches_consumed=2, world_size=1))
    dataset.load_state(DataState(epoch=0, batches_consumed=2, world_size=2, num_workers=2))
    with pytest.raises(RuntimeError, match="num_workers=2"):
        list(dataset)


# ---- config and counting --------------------------------------------------------------------


def test_from_data_config_and_count_rows(tmp_path):
    (tmp_path / "a.csv").write_text("id;label\n" + "".join(f"{i};{i % 2}\n" for i in range(10)))
    config = data_pb2.DataConfig(
        batch_size=4, dataset_type=data_pb2.CsvDataset, csv_delimiter=";", shuffle=True
    )
    dataset = RecordBatchDataset.from_data_config(
        str(tmp_path / "*.csv"), config, columns=["id"], parse_fn=ids_parse, shuffle=False
    )
    assert list(dataset) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert count_rows(str(tmp_path), data_pb2.CsvDataset, ";") == 10
    assert count_rows(str(tmp_path / "a.csv"), "CsvDataset", ";") == 10


# ---- keep_order (evaluation, predict) ---------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2])
def test_keep_order_yields_the_batches_of_num_workers_0(files, world_size):
    """With keep_order each rank's batches are those of num_workers 0 (rows, boundaries, order)
    whatever the number of workers; without it the workers' row ranges interleave."""
    for rank in range(world_size):
        expected = run_loader(make_dataset(files, batch_size=7, rank=rank, world_size=world_size), 0)
        for num_workers in (1, 2):
            dataset = make_dataset(files, batch_size=7, rank=rank, world_size=world_size, keep_order=True)
            batches = run_loader(dataset, num_workers)
            assert batches == expected and len(dataset) == len(expected), (rank, num_workers)
    if world_size == 1:
        assert run_loader(make_dataset(files, batch_size=7), 2) != expected


def test_keep_order_with_a_wants_rng_parser_draws_as_with_num_workers_0(files, monkeypatch):
    def parse(batch, source, rng):
        return [batch.column("id").to_pylist(), rng.integers(1 << 30)]
    parse.wants_rng = True
    expected = emulate_loader(make_dataset(files, parse_fn=parse, batch_size=5, keep_order=True), 0, monkeypatch)
    assert emulate_loader(make_dataset(files, parse_fn=parse, batch_size=5, keep_order=True), 3,
                          monkeypatch) == expected
    assert expected == emulate_loader(make_dataset(files, parse_fn=parse, batch_size=5), 0, monkeypatch)
