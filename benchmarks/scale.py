"""Cost against scale: training steps, full-corpus evaluation and reading, as tables grow.

Each measurement runs in its own process (so that its peak RSS is its own), one torch thread:

- **train**: ms per step (forward, loss, backward, optimizer steps; batches pre-parsed in
  memory) of a DSSMV2 whose item table (shared by the item id and the user's history) has
  ``rows`` rows of dim 64, batch 512, in-batch softmax, for each backend: ``sparse`` (the default:
  sparse gradients, row-wise Adagrad), ``dense`` (dense gradients, Adam: every row read and written
  each step) and ``torchrec`` (train_config.embedding_sharding in one process: the tables in
  TorchRec's fused row-wise Adagrad kernels, when TorchRec is installed). Peak RSS of the process, its RSS after start-up
  (imports), and the table's bytes.
- **eval**: full-corpus exact top-100 of ``--eval_users`` random users over ``--eval_items``
  random items (dim 64) with recframe's chunked scoring (user chunk 1024 x item chunk 65536):
  seconds, and peak RSS above the embeddings themselves.
- **reader**: rows/s of the training reader + feature parsing over synthetic logs of
  ``--reader_rows`` rows (benchmarks/synthetic_logs.py), and its peak RSS above start-up.

    python benchmarks/scale.py                                   # 10k, 1M and 10M rows
    python benchmarks/scale.py --rows 10000 1000000 --reader_rows 1000000 --json /tmp/scale.json

``--json FILE`` writes every row as a record with (at least) ``benchmark``, ``backend``,
``rows``, ``ms_per_step`` (None for eval and reader rows) and ``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 512
DIM = 64


def rss_mb() -> float:
    """Peak RSS of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def model_config_text(rows: int, num_users: int, dense_gradients: bool, sharded: bool = False) -> str:
    optimizer = ("sparse_optimizer { adam_optimizer { lr: 0.001 } dense_gradients: true }" if dense_gradients
                 else "sparse_optimizer { rowwise_adagrad_optimizer { lr: 0.05 } }")
    if sharded:
        optimizer += ' embedding_sharding { sharding_types: ["table_wise", "data_parallel"] }'
    return f"""
data_config {{ batch_size: {BATCH} item_id_field: "item_id" }}
train_config {{ {optimizer} dense_optimizer {{ adam_optimizer {{ lr: 0.001 }} }} }}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: {num_users} embedding_dim: 32 }} }}
feature_configs {{ id_feature {{ feature_name: "segment" num_buckets: 100 embedding_dim: 8 }} }}
feature_configs {{ sequence_id_feature {{ feature_name: "hist_item_ids" num_buckets: {rows} embedding_dim: {DIM}
                                          embedding_name: "item" sequence_length: 20 }} }}
feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: {rows} embedding_dim: {DIM} embedding_name: "item" }} }}
feature_configs {{ id_feature {{ feature_name: "category" hash_bucket_size: 1000 embedding_dim: 16 }} }}
model_config {{
  feature_groups {{ group_name: "user" feature_names: ["user_id", "segment", "hist_item_ids"] }}
  feature_groups {{ group_name: "item" feature_names: ["item_id", "category"] }}
  dssm_v2 {{ user_tower {{ input: "user" mlp {{ hidden_units: [128] }} }}
            item_tower {{ input: "item" mlp {{ hidden_units: [128] }} }}
            output_dim: 64 similarity: COSINE temperature: 0.05 }}
}}
"""


def device_sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_peak_mb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def worker_train(backend: str, rows: int, steps: int, warmup: int, device_name: str = "cpu") -> dict:
    import numpy as np
    import torch
    from google.protobuf import text_format

    from recframe.features import BatchParser, create_features
    from recframe.models import create_model
    from recframe.protos import pipeline_pb2
    from recframe.training.optim import build_optimizer, split_sparse_dense
    from synthetic_logs import rows_table

    torch.set_num_threads(1)
    device = torch.device(device_name)
    startup = current_rss_mb()
    num_users = 100_000
    config = text_format.Parse(model_config_text(rows, num_users, backend == "dense", backend == "torchrec"),
                               pipeline_pb2.PipelineConfig())
    features = create_features(config.feature_configs)
    torch.manual_seed(0)
    model = create_model(config.model_config, features, sparse_embeddings=backend != "dense").to(device)
    train_config = config.train_config
    if backend == "torchrec":  # one process: the tables in TorchRec's fused kernels
        from recframe.training.sharding import ShardedEmbeddings

        sharded = ShardedEmbeddings(model, train_config, device)
        forward = sharded.dmp
        optimizers = [build_optimizer(sharded.replicated_tables, train_config.sparse_optimizer, sparse=False),
                      build_optimizer(sharded.dense_parameters(), train_config.dense_optimizer)]
    else:
        forward = model
        sparse, dense = split_sparse_dense(model)
        optimizers = [build_optimizer(sparse, train_config.sparse_optimizer),
                      build_optimizer(dense, train_config.dense_optimizer)]
    optimizers = [o for o in optimizers if o is not None]
    parser = BatchParser(list(features.values()), item_id_field="item_id")
    rng = np.random.default_rng(0)
    batches = [parser(rows_table(rng, BATCH, num_users, rows, 20)).to(device) for _ in range(8)]
    times = []
    for step in range(warmup + steps):
        batch = batches[step % len(batches)]
        start = time.perf_counter()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        model.compute_loss(forward(batch), batch)["total"].backward()
        for optimizer in optimizers:
            optimizer.step()
        device_sync(device)  # a step's time includes its kernels (on a GPU they run asynchronously)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    ms = 1000 * float(np.median(times))
    return {"benchmark": "train", "backend": backend, "device": device_name, "rows": rows, "ms_per_step": ms,
            "samples_per_sec": BATCH / ms * 1000, "peak_rss_mb": rss_mb(), "startup_rss_mb": startup,
            "peak_gpu_mb": gpu_peak_mb(device), "table_mb": rows * DIM * 4 / 2**20}


def worker_eval(num_users: int, num_items: int, device_name: str = "cpu") -> dict:
    import torch

    from recframe.metrics.retrieval import exact_top_k

    torch.set_num_threads(1)
    device = torch.device(device_name)
    gen = torch.Generator().manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(num_items, DIM, generator=gen), dim=1).to(device)
    users = torch.nn.functional.normalize(torch.randn(num_users, DIM, generator=gen), dim=1).to(device)
    before = current_rss_mb()
    gpu_before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
    start = time.perf_counter()
    exact_top_k(users, items, 100, chunk_size=1024, item_chunk_size=65536)
    device_sync(device)
    seconds = time.perf_counter() - start
    peak_gpu = gpu_peak_mb(device)
    return {"benchmark": "eval", "backend": "exact", "device": device_name, "rows": num_items, "users": num_users,
            "ms_per_step": None, "seconds": seconds, "peak_rss_mb": rss_mb(),
            "rss_above_embeddings_mb": rss_mb() - before,
            "gpu_above_embeddings_mb": None if peak_gpu is None else peak_gpu - gpu_before,
            "bound_mb": 1024 * 65536 * 4 / 2**20}


def worker_reader(num_rows: int, data_dir: str) -> dict:
    import torch
    from google.protobuf import text_format

    from recframe.data import RecordBatchDataset
    from recframe.features import BatchParser, create_features
    from recframe.protos import pipeline_pb2
    from synthetic_logs import write_logs

    torch.set_num_threads(1)
    paths = write_logs(data_dir, num_rows, 1_000_000, 1_000_000, num_eval_users=10)
    config = text_format.Parse(model_config_text(1_000_000, 1_000_000, False), pipeline_pb2.PipelineConfig())
    parser = BatchParser(list(create_features(config.feature_configs).values()), item_id_field="item_id")
    dataset = RecordBatchDataset(paths["train"], columns=parser.columns(), parse_fn=parser, batch_size=4096,
                                 shuffle=True, shuffle_buffer_size=32768)
    startup = current_rss_mb()
    start = time.perf_counter()
    rows = sum(batch.batch_size for batch in dataset)
    seconds = time.perf_counter() - start
    return {"benchmark": "reader", "backend": "parquet+parse", "rows": rows, "ms_per_step": None,
            "rows_per_sec": rows / seconds, "peak_rss_mb": rss_mb(), "rss_above_startup_mb": rss_mb() - startup}


def run_worker(args: list[str]) -> dict | None:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": HERE})
    if done.returncode != 0:
        print(f"# {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def torchrec_available() -> bool:
    done = subprocess.run([sys.executable, "-c", "import torchrec"], capture_output=True)
    return done.returncode == 0


def memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000, 10_000_000])
    parser.add_argument("--backends", nargs="+", default=["sparse", "dense", "torchrec"])
    parser.add_argument("--dense_max_rows", type=int, default=1_000_000,
                        help="largest table of the dense backend (it reads and writes every row each step)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--eval_users", type=int, default=10_000)
    parser.add_argument("--eval_items", type=int, default=1_000_000)
    parser.add_argument("--reader_rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--parts", nargs="+", choices=["train", "eval", "reader"], default=["train", "eval", "reader"],
                        help="which measurements to run (default all)")
    parser.add_argument("--device", default="cpu", help="device of the train and eval parts (cpu, cuda)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON records")
    parser.add_argument("--worker", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "train":
            result = worker_train(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        elif kind == "eval":
            result = worker_eval(int(rest[0]), int(rest[1]), rest[2])
        else:
            result = worker_reader(int(rest[0]), rest[1])
        print(json.dumps(result))
        return

    records = []
    print(f"# scale (one torch thread per process; machine memory {memory_gb():.0f} GiB)\n")
    if "train" in args.parts:
        records += measure_training(args)
    if "eval" in args.parts:
        records += measure_evaluation(args)
    if "reader" in args.parts:
        records += measure_reader(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)
        print(f"\nwrote {args.json}")


def measure_training(args: argparse.Namespace) -> list[dict]:
    records = []
    print(f"| backend ({args.device}) | table rows | ms/step | samples/s | peak RSS MB | RSS after start-up MB | "
          "peak GPU MB | table MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    backends = [b for b in args.backends if b != "torchrec" or torchrec_available()]
    if "torchrec" in args.backends and "torchrec" not in backends:
        print("| torchrec | | skipped: TorchRec is not installed (pip install 'recframe[torchrec]') | | | | | |")
    for rows in args.rows:
        for backend in backends:
            if backend == "dense" and rows > args.dense_max_rows:
                continue
            needed_gb = rows * DIM * 4 / 2**30 * (4 if backend == "dense" else 1.5)
            if needed_gb > 0.8 * memory_gb():
                print(f"| {backend} | {rows:,} | skipped: needs about {needed_gb:.0f} GiB | | | | | |")
                continue
            steps = args.steps if rows < 5_000_000 or backend != "dense" else 3
            r = run_worker(["train", backend, str(rows), str(steps), str(args.warmup), args.device])
            if r:
                records.append(r)
                gpu = "-" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:,.0f}"
                print(f"| {backend} | {rows:,} | {r['ms_per_step']:.1f} | {r['samples_per_sec']:,.0f} | "
                      f"{r['peak_rss_mb']:,.0f} | {r['startup_rss_mb']:,.0f} | {gpu} | {r['table_mb']:,.0f} |")
    return records


def measure_evaluation(args: argparse.Namespace) -> list[dict]:
    records = []
    print(f"\n| evaluation ({args.device}) | users x items | seconds | peak RSS MB | RSS above the embeddings MB | "
          "GPU above the embeddings MB | score buffer MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    r = run_worker(["eval", str(args.eval_users), str(args.eval_items), args.device])
    if r:
        records.append(r)
        gpu = "-" if r["gpu_above_embeddings_mb"] is None else f"{r['gpu_above_embeddings_mb']:,.0f}"
        print(f"| exact top-100, chunked | {args.eval_users:,} x {args.eval_items:,} | {r['seconds']:.2f} | "
              f"{r['peak_rss_mb']:,.0f} | {r['rss_above_embeddings_mb']:,.0f} | {gpu} | {r['bound_mb']:,.0f} |")
    return records


def measure_reader(args: argparse.Namespace) -> list[dict]:
    records = []
    print("\n| reader (Parquet, shuffle, feature parsing, batch 4096) | rows | rows/s | peak RSS MB | RSS above start-up MB |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.reader_rows:
            r = run_worker(["reader", str(rows), os.path.join(tmp, str(rows))])
            if r:
                records.append(r)
                print(f"| synthetic logs | {r['rows']:,} | {r['rows_per_sec']:,.0f} | {r['peak_rss_mb']:,.0f} | "
                      f"{r['rss_above_startup_mb']:,.0f} |")
    return records


if __name__ == "__main__":
    main()
