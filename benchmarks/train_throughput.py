"""Training throughput: the recframe training loop vs a bare PyTorch loop on in-memory batches.

Both setups train the SAME model: built from the same pipeline config by
``recframe.pipeline.Pipeline(...).build_model()``, with the same batch size and the same
optimizers (``split_sparse_dense`` + ``build_optimizer`` from the config: Adam on the
embedding tables, Adam on the rest).

- **recframe**: ``recframe.recipes.train.train_and_evaluate`` itself, unchanged: reading
  Parquet, parsing features in the DataLoader (``--num_workers``), forward, loss, backward,
  optimizer and LR-scheduler steps, training metrics, progress and the JSONL/TensorBoard log
  every ``log_step_count_steps``. The run is one epoch capped at
  ``--warmup + --steps + 1`` steps with periodic evaluation and checkpoints off, so the only
  evaluation is the final one, after the measured steps. Timing: the training DataLoader is
  wrapped (``trainer.create_dataloader`` is replaced by a pass-through that records
  ``time.perf_counter()`` each time the loop asks for its next batch). Iteration ``i`` of the
  loop spans request ``i`` to request ``i + 1`` (waiting for the batch included), so the
  measured span, request ``warmup`` to request ``warmup + steps``, is exactly ``steps``
  complete loop iterations in steady state; setup, warm-up and the final evaluation are
  outside it. Nothing is subtracted.
- **bare PyTorch**: the batches are read and parsed once, before timing, into a list of
  ``recframe.batch.Batch`` objects (tensors already on the device); the timed loop is
  ``model(batch)`` -> ``model.compute_loss`` -> ``zero_grad`` -> ``backward`` ->
  ``optimizer.step()`` over that list: no reading, no parsing, no metrics, no logging. This
  is the limit of what any loop can reach for this model on this machine (framework
  overhead = 1 - ratio). The same ``--warmup`` steps are run first and not timed.

Each setup is run ``--repeats`` times (fresh model each time) and the median samples/s is
reported (the machine may be shared).

Data: by default a synthetic MovieLens-like data set (the schema of
``examples/dssm_movielens.config``: user_id, gender, age, occupation, zip_prefix,
hist_movie_ids list<int64> of up to 50, seconds_since_last, movie_id, genres list<string>, year; an item table
and a validation table with seen_items) is generated into a temporary folder, so the script
runs anywhere. ``--data_dir`` uses real prepared MovieLens tables instead::

    recframe prepare --movielens ml-100k --out /tmp/bench_ml100k
    python benchmarks/train_throughput.py                                   # synthetic
    python benchmarks/train_throughput.py --data_dir /tmp/bench_ml100k --num_workers 1

With real data the measured steps must fit in one epoch (ML-100K at batch 512 has 191
full batches): ``--steps`` is lowered to fit, and the table says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recframe.config import load_pipeline_config
from recframe.data import create_dataloader
from recframe.pipeline import Pipeline
from recframe.recipes import train as trainer_module
from recframe.training.optim import build_optimizer, split_sparse_dense

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "examples" / "dssm_movielens.config"
GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline_config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--data_dir", default=None,
                        help="prepared MovieLens tables (train/valid/items.parquet); default: synthetic")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=150, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before the measured ones")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of the recframe loop")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setup; the median is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--num_users", type=int, default=943, help="synthetic users (ids 1..num_users)")
    parser.add_argument("--num_items", type=int, default=1682, help="synthetic items (ids 1..num_items)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed_precision", choices=("none", "bf16", "fp16"), default="none",
                        help="train_config.mixed_precision of both setups (fp16: CUDA, with a grad scaler)")
    parser.add_argument("--compile", action="store_true", help="train_config.compile: torch.compile the towers")
    parser.add_argument("--json", default=None, help="also write the result as a JSON record")
    return parser.parse_args()


# ---- synthetic data ------------------------------------------------------------------------


def write_synthetic(out_dir: str, num_rows: int, num_users: int, num_items: int, seed: int) -> None:
    """train / valid / items .parquet with the MovieLens tables' types (ids in config range)."""
    rng = np.random.default_rng(seed)
    popularity = rng.zipf(1.3, num_items).astype(np.float64)
    popularity /= popularity.sum()
    item_ids = np.arange(1, num_items + 1, dtype=np.int64)
    item_genres = [list(rng.choice(GENRES, size=rng.integers(1, 4), replace=False)) for _ in item_ids]
    item_year = rng.integers(1930, 1999, num_items)
    users = {
        "gender": rng.choice(["M", "F"], num_users),
        "age": rng.choice([1, 18, 25, 35, 45, 50, 56], num_users),
        "occupation": rng.choice([f"occ{i}" for i in range(21)], num_users),
        "zip_prefix": rng.choice([f"{i:03d}" for i in range(300)], num_users),
    }

    def rows(n: int, with_seen: bool) -> pa.Table:
        user = rng.integers(1, num_users + 1, n)
        movie = rng.choice(item_ids, n, p=popularity)
        hist_len = rng.integers(0, 51, n)
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(hist_len, out=offsets[1:])
        hist = rng.choice(item_ids, int(offsets[-1]), p=popularity)
        u, m = user - 1, movie - 1
        cols = {
            "user_id": pa.array(user),
            "gender": pa.array(users["gender"][u]),
            "age": pa.array(users["age"][u].astype(np.int64)),
            "occupation": pa.array(users["occupation"][u]),
            "zip_prefix": pa.array(users["zip_prefix"][u]),
            "hist_movie_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(hist)),
            # As MovieLens: half the rows in the same second as the previous one, -1 without history.
            "seconds_since_last": pa.array(np.where(hist_len == 0, -1, np.where(
                rng.random(n) < 0.5, 0, rng.exponential(3600.0, n).astype(np.int64)))),
            "movie_id": pa.array(movie),
            "genres": pa.array([item_genres[i] for i in m], pa.list_(pa.string())),
            "year": pa.array(item_year[m].astype(np.int64)),
            "label": pa.array(rng.integers(0, 2, n)),
        }
        if with_seen:
            seen = [np.unique(hist[offsets[i]:offsets[i + 1]]) for i in range(n)]
            cols["seen_items"] = pa.array(seen, pa.list_(pa.int64()))
        return pa.table(cols)

    pq.write_table(rows(num_rows, False), os.path.join(out_dir, "train.parquet"),
                   row_group_size=16384, compression="zstd")
    pq.write_table(rows(num_users, True), os.path.join(out_dir, "valid.parquet"), compression="zstd")
    items = pa.table({
        "movie_id": pa.array(item_ids),
        "genres": pa.array(item_genres, pa.list_(pa.string())),
        "year": pa.array(item_year.astype(np.int64)),
    })
    pq.write_table(items, os.path.join(out_dir, "items.parquet"), compression="zstd")


# ---- pipeline ------------------------------------------------------------------------------


_CONFIGS: dict[str, object] = {}


def make_pipeline(args: argparse.Namespace, data_dir: str, model_dir: str, num_steps: int) -> Pipeline:
    """The example config on ``data_dir``, one epoch capped at ``num_steps``, no periodic eval.

    The config file is read once per process, so every run of both setups uses the same model.
    """
    if args.pipeline_config not in _CONFIGS:
        _CONFIGS[args.pipeline_config] = load_pipeline_config(args.pipeline_config)
    config = type(_CONFIGS[args.pipeline_config])()
    config.CopyFrom(_CONFIGS[args.pipeline_config])
    config.train_input_path = os.path.join(data_dir, "train.parquet")
    config.eval_input_path = os.path.join(data_dir, "valid.parquet")
    config.item_input_path = os.path.join(data_dir, "items.parquet")
    config.ClearField("test_input_path")
    config.model_dir = model_dir
    dc = config.data_config
    dc.ClearField("movielens")
    sampler_kind = dc.WhichOneof("sampler")
    if sampler_kind and hasattr(getattr(dc, sampler_kind), "input_path"):
        getattr(dc, sampler_kind).input_path = config.item_input_path
    dc.batch_size = args.batch_size
    dc.num_workers = args.num_workers
    tc = config.train_config
    tc.num_epochs = 1
    tc.num_steps = num_steps
    tc.save_checkpoints_steps = 0
    tc.device = args.device
    tc.mixed_precision = args.mixed_precision
    tc.compile = args.compile
    config.eval_config.eval_every_n_steps = 0
    config.eval_config.ClearField("early_stopping")
    size_tables_to_data(config, data_dir)
    return Pipeline(config, args.pipeline_config)


def size_tables_to_data(config, data_dir: str) -> None:
    """Raise every ``num_buckets`` to one more than the largest id its table's columns hold in
    the data (the example config is sized for MovieLens-100K; synthetic data may have more ids);
    features sharing a table get the same size."""
    tables = [pq.read_table(os.path.join(data_dir, f"{name}.parquet"))
              for name in ("train", "valid", "items") if os.path.exists(os.path.join(data_dir, f"{name}.parquet"))]
    messages = [getattr(fc, fc.WhichOneof("feature")) for fc in config.feature_configs]
    messages = [m for m in messages if "num_buckets" in m.DESCRIPTOR.fields_by_name and m.HasField("num_buckets")]
    rows: dict[str, int] = {}
    for message in messages:
        column, table_name = message.input_name or message.feature_name, message.embedding_name or message.feature_name
        for table in tables:
            if column in table.column_names:
                values = table.column(column)
                if pa.types.is_list(values.type):
                    values = pc.list_flatten(values)
                largest = pc.max(values).as_py()
                rows[table_name] = max(rows.get(table_name, 0), (largest if largest is not None else -1) + 1)
    for message in messages:
        table_name = message.embedding_name or message.feature_name
        message.num_buckets = max(message.num_buckets, rows.get(table_name, 0))


def build_optimizers(model: torch.nn.Module, pipeline: Pipeline) -> list[torch.optim.Optimizer]:
    tc = pipeline.config.train_config
    sparse, dense = split_sparse_dense(model)
    optimizers = [build_optimizer(sparse, tc.sparse_optimizer), build_optimizer(dense, tc.dense_optimizer)]
    return [o for o in optimizers if o is not None]


# ---- the two setups ------------------------------------------------------------------------


def device_sync(device: str):
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def run_recframe(args: argparse.Namespace, data_dir: str, steps: int) -> float:
    """Seconds of ``steps`` steady-state iterations of train_and_evaluate's loop."""
    stamps: list[float] = []
    sync = device_sync(args.device)
    original = trainer_module.create_dataloader

    def timed_dataloader(dataset, num_workers, *a, **kw):
        loader = original(dataset, num_workers, *a, **kw)

        def iterate():
            iterator = iter(loader)
            while True:
                if len(stamps) in (args.warmup, args.warmup + steps):
                    sync()  # the window's ends wait for the device; the steps between do not
                stamps.append(time.perf_counter())  # the loop asks for its next batch
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                yield batch

        return iterate()

    with tempfile.TemporaryDirectory() as model_dir:
        pipeline = make_pipeline(args, data_dir, model_dir, args.warmup + steps + 1)
        trainer_module.create_dataloader = timed_dataloader
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                result = trainer_module.train_and_evaluate(pipeline, model_dir)
        finally:
            trainer_module.create_dataloader = original
    if result["step"] != args.warmup + steps + 1 or len(stamps) < args.warmup + steps + 1:
        raise RuntimeError(f"the run stopped early at step {result['step']}")
    return stamps[args.warmup + steps] - stamps[args.warmup]


def load_batches(args: argparse.Namespace, data_dir: str, count: int) -> list:
    """``count`` parsed training batches (cycling over one epoch), already on the device."""
    pipeline = make_pipeline(args, data_dir, "", count)
    parser = pipeline.train_parser()
    dataset = pipeline.dataset(pipeline.config.train_input_path, parser.columns(), parser,
                               seed=pipeline.config.train_config.seed)
    epoch = [b.to(args.device) for b in create_dataloader(dataset, 0)]
    return [epoch[i % len(epoch)] for i in range(count)]


def run_bare(args: argparse.Namespace, data_dir: str, batches: list, steps: int) -> float:
    """Seconds of ``steps`` steps of a plain PyTorch loop over in-memory batches."""
    pipeline = make_pipeline(args, data_dir, "", len(batches))
    torch.manual_seed(pipeline.config.train_config.seed)
    model = pipeline.build_model().to(args.device)
    model.train()
    if args.compile:
        model.user_tower.compile()
        model.item_tower.compile()
    optimizers = build_optimizers(model, pipeline)
    device = torch.device(args.device)
    scaler = torch.amp.GradScaler(device.type) if args.mixed_precision == "fp16" else None

    def step(batch) -> None:
        with trainer_module.autocast(device, args.mixed_precision):
            loss = model.compute_loss(model(batch), batch)["total"]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        for optimizer in optimizers:
            scaler.step(optimizer) if scaler is not None else optimizer.step()
        if scaler is not None:
            scaler.update()

    for batch in batches[: args.warmup]:
        step(batch)
    sync = device_sync(args.device)
    sync()
    start = time.perf_counter()
    for batch in batches[args.warmup : args.warmup + steps]:
        step(batch)
    sync()
    return time.perf_counter() - start


# ---- main ----------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("RECFRAME_NO_PROGRESS", "1")
    steps = args.steps
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir:
            data_dir = os.path.abspath(args.data_dir)
            source = f"data: {data_dir}"
        else:
            data_dir = tmp
            rows = (args.warmup + steps + 2) * args.batch_size
            write_synthetic(tmp, rows, args.num_users, args.num_items, args.seed)
            source = f"data: synthetic, {rows} rows, {args.num_users} users, {args.num_items} items"
        probe = make_pipeline(args, data_dir, "", 1)
        parser = probe.train_parser()
        dataset = probe.dataset(probe.config.train_input_path, parser.columns(), parser)
        per_epoch = dataset.num_batches(args.num_workers)
        if args.warmup + steps + 1 > per_epoch:
            steps = per_epoch - args.warmup - 1
            notes.append(f"--steps lowered to {steps}: one epoch has {per_epoch} batches "
                         "(the trainer evaluates at every epoch end)")
        batches = load_batches(args, data_dir, args.warmup + steps)
        samples = sum(b.batch_size for b in batches[args.warmup:])

        times: dict[str, list[float]] = {"recframe": [], "bare": []}
        for _ in range(args.repeats):  # alternate, so a slow phase of the machine hits both
            times["recframe"].append(run_recframe(args, data_dir, steps))
            times["bare"].append(run_bare(args, data_dir, batches, steps))

    rate = {name: samples / statistics.median(t) for name, t in times.items()}
    print(f"# train throughput ({source}; device {args.device}, mixed_precision {args.mixed_precision}, compile "
          f"{args.compile}, torch threads {torch.get_num_threads()}, median of {args.repeats} runs, {args.warmup} "
          "warm-up steps)")
    for note in notes:
        print(f"# note: {note}")
    print()
    print("| setup | batch size | steps | seconds | samples/s | ratio (recframe / bare) |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = {"recframe": f"recframe train_and_evaluate loop, num_workers={args.num_workers}",
              "bare": "bare PyTorch loop, pre-parsed in-memory batches"}
    for name in ("recframe", "bare"):
        seconds = statistics.median(times[name])
        ratio = rate["recframe"] / rate["bare"] if name == "recframe" else 1.0
        print(f"| {labels[name]} | {args.batch_size} | {steps} | {seconds:.3f} | "
              f"{rate[name]:,.0f} | {ratio:.3f} |")
    print()
    print("runs (s): " + "; ".join(f"{n}: " + ", ".join(f"{t:.3f}" for t in ts) for n, ts in times.items()))
    if args.json:
        record = {"device": args.device, "batch_size": args.batch_size, "mixed_precision": args.mixed_precision,
                  "compile": args.compile, "steps": steps, "recframe_samples_per_sec": rate["recframe"],
                  "bare_samples_per_sec": rate["bare"], "ratio": rate["recframe"] / rate["bare"]}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
