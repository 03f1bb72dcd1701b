"""The torch IterableDataset over :class:`~recframe.data.reader.StreamingReader`.

Each DataLoader worker of each rank is one reader:
``global_reader = rank * num_workers + worker_id`` among ``world_size * num_workers``
(``num_workers == 0`` counts as one reader per rank, in the main process). Batches are formed
by the reader and turned into model inputs by ``parse_fn`` inside the worker, so the DataLoader
runs with ``batch_size=None``.

Epochs: call :meth:`RecordBatchDataset.set_epoch` before ``iter(loader)`` each epoch (workers are
not persistent, so they receive a fresh copy of the dataset, epoch included, at every ``iter``).

Resume semantics. The trainer records :class:`DataState` = (epoch, batches consumed by this
rank's loop in that epoch, world_size, num_workers) and restores it with
:meth:`RecordBatchDataset.load_state` (or ``set_epoch(e)`` + ``set_start_batch(n)``). The next
iteration then yields exactly the batches the uninterrupted epoch would have yielded after its
first ``n``, in the same order:

- With ``W >= 1`` workers the DataLoader (``in_order=True``) asks workers in round-robin order
  and skips a worker for good once it is exhausted. The number of batches every worker yields
  is known in advance (``StreamingReader.reader_num_batches``), so :func:`round_robin_skips`
  replays that interleaving for ``n`` batches and gives each worker its own skip count, which
  handles workers that run out early.
- The resumed DataLoader always starts asking at worker 0, whereas the interrupted one would
  have continued with the worker after the last one it used. So worker ``w`` plays reader role
  ``(w + first) % W``, where ``first`` is that next worker: the data of each global reader is
  unchanged, only which process reads it rotates.
- Skipping is cheap without shuffle (skipped rows are not read) and costs a re-read with
  shuffle (rows are read and discarded, ``parse_fn`` is not called on them).
- The mapping assumes the same files, options, seed, ``world_size`` and ``num_workers``;
  :meth:`load_state` records the saved ``num_workers`` and the iteration raises if the actual
  number of workers differs.

The start batch applies to every iteration until :meth:`set_epoch` moves to another epoch
(which resets it to 0) or :meth:`set_start_batch` changes it.

Order kept (``keep_order=True``, for evaluation and predict): the rank stays one reader, and
with ``W`` workers, worker ``w`` parses its batches ``w, w + W, w + 2W, ...``; the DataLoader's
round robin then yields exactly the batches of ``num_workers = 0`` (same rows, same order, same
boundaries). Each worker reads every row of the rank (the others' rows are read, not parsed).
No resume (start batch) in this mode.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recframe.data.inputs import PARQUET, count_rows
from recframe.data.reader import StreamingReader

__all__ = [
    "DataState",
    "RecordBatchDataset",
    "count_rows",
    "create_dataloader",
    "round_robin_skips",
    "seed_worker",
]

ParseFn = Callable[[pa.RecordBatch, str], Any]
# Mixed into the per-batch sampling seed so it never equals the reader's shuffle seed.
_SAMPLING_SALT = 0x5A3D


@dataclass
class DataState:
    """Position of one rank in the data: ``batches_consumed`` batches of ``epoch`` used.

    ``world_size`` and ``num_workers`` are those of the run that saved it; resuming requires
    the same values (they determine how rows are split among readers).
    """

    epoch: int = 0
    batches_consumed: int = 0
    world_size: int = 1
    num_workers: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "batches_consumed": self.batches_consumed,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, int]) -> "DataState":
        return cls(**{k: int(v) for k, v in values.items()})


def round_robin_skips(num_consumed: int, worker_batches: Sequence[int]) -> tuple[list[int], int]:
    """Per-worker skips for resuming after ``num_consumed`` round-robin batches.

    Workers are visited ``0, 1, ..., W-1, 0, ...``; a worker with no batches left is passed
    over (that is what the DataLoader does). Returns ``(skips, next_worker)``: how many of the
    first ``num_consumed`` batches came from each worker, and the worker the round-robin would
    visit next (``0`` when nothing was consumed).
    """
    num_workers = len(worker_batches)
    skips = [0] * num_workers
    remaining = int(num_consumed)
    last = -1
    while remaining > 0:
        active = [w for w in range(num_workers) if skips[w] < worker_batches[w]]
        if not active:
            break
        rounds = min(remaining // len(active), min(worker_batches[w] - skips[w] for w in active))
        if rounds > 0:
            for w in active:
                skips[w] += rounds
            remaining -= rounds * len(active)
            last = active[-1]
            continue
        for w in active[:remaining]:
            skips[w] += 1
        last = active[remaining - 1]
        remaining = 0
    return skips, (last + 1) % max(num_workers, 1)


class RecordBatchDataset(IterableDataset):
    """Sharded, shuffled, resumable batches of Parquet / CSV rows, parsed by ``parse_fn``.

    Yields ``parse_fn(record_batch, source)`` (or the ``pyarrow.RecordBatch`` itself when
    ``parse_fn`` is None), where ``source`` names the files and row spans of the batch.
    See the module docstring for epochs and resume.
    """

    def __init__(
        self,
        input_path: str | Sequence[str],
        *,
        columns: Sequence[str] | None,
        parse_fn: ParseFn | None = None,
        batch_size: int = 1024,
        dataset_type: int | str = PARQUET,
        shuffle: bool = True,
        shuffle_buffer_size: int = 32768,
        drop_remainder: bool = False,
        csv_delimiter: str = ",",
        csv_column_types: Mapping[str, pa.DataType] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        read_chunk_rows: int = 65536,
        keep_order: bool = False,
    ) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.reader = StreamingReader(
            input_path,
            columns=columns,
            dataset_type=dataset_type,
            batch_size=batch_size,
            shuffle=shuffle,
            shuffle_buffer_size=shuffle_buffer_size,
            drop_remainder=drop_remainder,
            csv_delimiter=csv_delimiter,
            csv_column_types=csv_column_types,
            seed=seed,
            read_chunk_rows=read_chunk_rows,
        )
        self.parse_fn = parse_fn
        # The batches of num_workers = 0, in their order, whatever the number of workers.
        self.keep_order = bool(keep_order)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.start_batch = 0
        # DataLoader workers this dataset is read with; set by create_dataloader, used by
        # num_batches() / len() in the main process.
        self.num_workers = 0
        self._expected_num_workers: int | None = None

    @classmethod
    def from_data_config(
        cls,
        input_path: str | Sequence[str],
        data_config: Any,
        *,
        columns: Sequence[str] | None,
        parse_fn: ParseFn | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        **overrides: Any,
    ) -> "RecordBatchDataset":
        """Build from a ``recframe.protos.data_pb2.DataConfig``; ``overrides`` win.

        For evaluation pass ``shuffle=False, drop_remainder=False``.
        """
        options = dict(
            batch_size=data_config.batch_size,
            dataset_type=int(data_config.dataset_type),
            shuffle=data_config.shuffle,
            shuffle_buffer_size=data_config.shuffle_buffer_size,
            drop_remainder=data_config.drop_remainder,
            csv_delimiter=data_config.csv_delimiter,
        )
        options.update(overrides)
        return cls(
            input_path,
            columns=columns,
            parse_fn=parse_fn,
            seed=seed,
            rank=rank,
            world_size=world_size,
            **options,
        )

    # ---- epochs and resume ------------------------------------------------------------------

    @property
    def paths(self) -> list[str]:
        """The expanded input files."""
        return self.reader.paths

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration; moving to another epoch resets the start."""
        if int(epoch) != self.epoch:
            self.start_batch = 0
            self._expected_num_workers = None
        self.epoch = int(epoch)

    def set_start_batch(self, num_batches: int) -> None:
        """Skip the first ``num_batches`` batches (of this rank's loop) of the epoch."""
        if num_batches < 0:
            raise ValueError(f"start batch must be >= 0, got {num_batches}")
        self.start_batch = int(num_batches)

    def state(self, batches_consumed: int) -> DataState:
        """The :class:`DataState` to save after the loop consumed ``batches_consumed``
        batches of the current epoch (counted from the epoch's beginning)."""
        return DataState(self.epoch, int(batches_consumed), self.world_size, self.num_workers)

    def load_state(self, state: DataState | Mapping[str, int]) -> None:
        """Resume at ``state`` (see the module docstring)."""
        if not isinstance(state, DataState):
            state = DataState.from_dict(state)
        if state.world_size != self.world_size:
            raise ValueError(
                f"cannot resume data position saved with world_size {state.world_size} "
                f"under world_size {self.world_size}: rows are split differently"
            )
        self.set_epoch(state.epoch)
        self.set_start_batch(state.batches_consumed)
        self._expected_num_workers = state.num_workers

    # ---- sizes ------------------------------------------------------------------------------

    def worker_num_batches(self, num_workers: int | None = None) -> list[int]:
        """Batches each worker of this rank yields in a full epoch."""
        workers = max(self.num_workers if num_workers is None else int(num_workers), 1)
        if self.keep_order:
            batches = self.reader.reader_num_batches(self.world_size)[self.rank]
            return [len(range(w, batches, workers)) for w in range(workers)]
        counts = self.reader.reader_num_batches(self.world_size * workers)
        return counts[self.rank * workers : (self.rank + 1) * workers]

    def num_batches(self, num_workers: int | None = None) -> int:
        """Batches this rank yields in a full epoch (ranks may differ by up to
        ``num_workers`` batches when the rows do not divide evenly)."""
        return sum(self.worker_num_batches(num_workers))

    def __len__(self) -> int:
        """Batches the next iteration yields: the epoch's batches minus the start batch."""
        return max(self.num_batches() - self.start_batch, 0)

    # ---- iteration --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        num_workers = info.num_workers if info is not None else 1
        worker_id = info.id if info is not None else 0
        self._check_num_workers(0 if info is None else num_workers)
        if self.keep_order:
            yield from self._iter_in_order(num_workers, worker_id)
            return
        worker_batches = self.worker_num_batches(num_workers)
        skips, first = round_robin_skips(self.start_batch, worker_batches)
        role = (worker_id + first) % num_workers
        batches = self.reader.iter_batches(
            epoch=self.epoch,
            reader_index=self.rank * num_workers + role,
            num_readers=self.world_size * num_workers,
            skip_batches=skips[role],
        )
        reader_index = self.rank * num_workers + role
        for number, (batch, source) in enumerate(batches, start=skips[role]):
            yield self._parse(batch, source, reader_index, number)

    def _iter_in_order(self, num_workers: int, worker_id: int) -> Iterator[Any]:
        """keep_order: this worker's share (every num_workers-th batch) of the rank's one reader."""
        if self.start_batch:
            raise ValueError("a dataset with keep_order=True cannot start at a later batch")
        batches = self.reader.iter_batches(epoch=self.epoch, reader_index=self.rank, num_readers=self.world_size,
                                           stride=num_workers, offset=worker_id)
        for number, (batch, source) in zip(range(worker_id, 1 << 62, num_workers), batches):
            yield self._parse(batch, source, self.rank, number)

    def _parse(self, batch: pa.RecordBatch, source: str, reader_index: int, number: int) -> Any:
        if self.parse_fn is None:
            return batch
        if getattr(self.parse_fn, "wants_rng", False):
            # A generator per (seed, epoch, reader, batch): the draws of a batch do not
            # depend on which batches were parsed before it, so a resumed run draws the same.
            key = [self.reader.seed, self.epoch, reader_index, number, _SAMPLING_SALT]
            return self.parse_fn(batch, source, rng=np.random.default_rng(key))
        return self.parse_fn(batch, source)

    def _check_num_workers(self, actual: int) -> None:
        """Resuming with another number of workers would replay the wrong batches."""
        expected = self._expected_num_workers
        if self.start_batch and expected is not None and max(expected, 1) != max(actual, 1):
            raise RuntimeError(
                f"data position was saved with num_workers={expected} but the DataLoader runs "
                f"{actual} workers; resume with the same data_config.num_workers"
            )


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python, numpy and torch per (seed, epoch, rank, worker).

    The data order does not depend on these generators; this makes any randomness inside
    ``parse_fn`` reproducible across runs.
    """
    info = get_worker_info()
    dataset = info.dataset if info is not None else None
    seed = getattr(getattr(dataset, "reader", None), "seed", 0)
    entropy = [seed, getattr(dataset, "epoch", 0), getattr(dataset, "rank", 0), worker_id]
    state = np.random.SeedSequence(entropy).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


def create_dataloader(
    dataset: RecordBatchDataset,
    num_workers: int,
    pin_memory: bool = False,
    multiprocessing_context: str | None = None,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader over already-formed batches (``batch_size=None``), workers not persistent.

    ``pin_memory``: batches in page-locked memory (for non-blocking copies to a GPU);
    ``prefetch_factor``: batches each worker prepares ahead (with ``num_workers`` > 0).
    Also records ``num_workers`` on the dataset (for ``len`` and :meth:`~RecordBatchDataset.state`).
    """
    dataset.num_workers = int(num_workers)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=int(num_workers),
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        prefetch_factor=int(prefetch_factor) if num_workers > 0 else None,
        in_order=True,
    )

