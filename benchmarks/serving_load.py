"""Load test of ``recframe serve``: QPS and latency under N concurrent clients.

Starts ``recframe serve`` in a subprocess on a free port, then for each concurrency level runs
that many client threads (one gRPC channel each) for ``--seconds``, every client sending the
user rows of ``--requests`` in turn (top ``--k``, the row's ``seen_items`` excluded when it
has them), and prints one table row per level: QPS, p50 / p95 / p99 latency, errors.

    recframe export --pipeline_config examples/dssm_movielens.config --export_dir out/export
    python benchmarks/serving_load.py --export_dir out/export --requests data/ml-100k/test.parquet \\
        --items data/ml-100k/items.parquet                                       # exact, 1,682 items
    python benchmarks/serving_load.py --export_dir out/export --requests data/ml-100k/test.parquet \\
        --synthetic_items 1000000 --index hnsw                                   # 1M random items, HNSW

``--synthetic_items N`` serves N random unit vectors instead of the catalogue (``--item_embeddings``
of a temporary file). ``--json FILE`` writes the rows (``concurrency``, ``qps``, ``p50_ms``,
``p95_ms``, ``p99_ms``, ``errors``, ``requests``). The clients run in this process and share the
machine with the server: on a small machine they take part of its CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_items(n: int, dim: int, path: str) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    pq.write_table(pa.table({"item_id": pa.array(np.arange(n, dtype=np.int64)),
                             "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel()))}), path)


def start_server(args, port: int, item_embeddings: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "recframe", "serve", "--export_dir", args.export_dir, "--port", str(port),
           "--index", args.index, "--max_batch_size", str(args.max_batch_size), "--max_wait_ms", str(args.max_wait_ms)]
    cmd += ["--item_embeddings", item_embeddings] if item_embeddings else (["--items", args.items] if args.items else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "serving ... on host:port" once ready
    if not line.startswith("serving"):
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()[-2000:]}")
    print(f"# {line.strip()}", flush=True)
    return proc


def run_level(address: str, requests: list, concurrency: int, seconds: float, k: int) -> dict:
    from recframe.serving.client import RetrievalClient

    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop = threading.Event()

    def client(i: int) -> None:
        with RetrievalClient(address, timeout=30) as c:
            j = i
            while not stop.is_set():
                features, exclude = requests[j % len(requests)]
                j += concurrency
                start = time.perf_counter()
                try:
                    c.top_k(features, k=k, exclude=exclude)
                    latencies[i].append(time.perf_counter() - start)
                except Exception:  # noqa: BLE001 - counted: the benchmark reports errors
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    all_ms = np.array([x for per in latencies for x in per]) * 1000
    return {"concurrency": concurrency, "requests": int(len(all_ms)), "qps": len(all_ms) / elapsed,
            "p50_ms": float(np.percentile(all_ms, 50)) if len(all_ms) else None,
            "p95_ms": float(np.percentile(all_ms, 95)) if len(all_ms) else None,
            "p99_ms": float(np.percentile(all_ms, 99)) if len(all_ms) else None, "errors": int(sum(errors))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", required=True)
    parser.add_argument("--requests", required=True, help="a table with the user tower's columns (e.g. test.parquet)")
    parser.add_argument("--items", default=None, help="the catalogue (default: the export's item_input_path)")
    parser.add_argument("--synthetic_items", type=int, default=0, help="serve this many random items instead")
    parser.add_argument("--index", default="flat", choices=("flat", "ivf", "hnsw"))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max_batch_size", type=int, default=64)
    parser.add_argument("--max_wait_ms", type=float, default=2.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from recframe.serving import load_tower

    user = load_tower(os.path.join(args.export_dir, "user"))
    table = pq.read_table(args.requests)
    has_seen = "seen_items" in table.column_names
    rows = table.select(user.input_columns + (["seen_items"] if has_seen else [])).to_pylist()
    requests = [({c: row[c] for c in user.input_columns}, row.get("seen_items") or []) for row in rows]
    with tempfile.TemporaryDirectory() as tmp:
        item_embeddings = None
        if args.synthetic_items:
            item_embeddings = os.path.join(tmp, "items.parquet")
            synthetic_items(args.synthetic_items, user.output_dim, item_embeddings)
        port = free_port()
        started = time.perf_counter()
        server = start_server(args, port, item_embeddings)
        print(f"# server ready in {time.perf_counter() - started:.1f} s; {len(requests)} request rows; "
              f"{args.seconds:g} s per level", flush=True)
        try:
            results = [run_level(f"127.0.0.1:{port}", requests, level, args.seconds, args.k) for level in args.levels]
        finally:
            server.terminate()
            server.wait(timeout=30)
    items = f"{args.synthetic_items:,} synthetic items" if args.synthetic_items else "the catalogue"
    print(f"\n| concurrency | QPS | p50 ms | p95 ms | p99 ms | errors |  ({items}, {args.index} index, top {args.k})")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['concurrency']} | {r['qps']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['errors']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**r, "index": args.index, "items": args.synthetic_items or None} for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
