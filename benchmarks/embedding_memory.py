"""Memory of one training process (= one DDP rank) for large embedding tables.

Under DDP every rank holds the whole model, so this is also the memory per rank. For each
table size, a fresh subprocess builds a DSSM whose item id table has that many rows, takes a
few Adam steps (dense gradients: the table's gradient and both Adam moments are full-size),
and reports its peak resident memory next to the arithmetic (parameters, gradient, Adam state).

    python benchmarks/embedding_memory.py --rows 1000000 10000000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
from google.protobuf import text_format
from recframe.protos import pipeline_pb2
from recframe.features import create_features, BatchParser
from recframe.models import create_model
from recframe.training.optim import build_optimizer, split_sparse_dense
import pyarrow as pa, numpy as np

rows, dim = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak_mb()
cfg = text_format.Parse(f'''
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 1000 embedding_dim: {dim} }} }}
feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: {rows} embedding_dim: {dim} }} }}
model_config {{
  feature_groups {{ group_name: "user" feature_names: "user_id" }}
  feature_groups {{ group_name: "item" feature_names: "item_id" }}
  dssm {{ user_tower {{ input: "user" }} item_tower {{ input: "item" }} similarity: COSINE temperature: 0.1 }}
}}''', pipeline_pb2.PipelineConfig())
features = create_features(cfg.feature_configs)
model = create_model(cfg.model_config, features)
sparse, dense = split_sparse_dense(model)
opt = build_optimizer(sparse + dense, None)
parser = BatchParser(list(features.values()), item_id_field="item_id")
rng = np.random.default_rng(0)
for _ in range(3):
    t = pa.table({"user_id": rng.integers(0, 1000, 1024), "item_id": rng.integers(0, rows, 1024)})
    b = parser(t)
    loss = model.compute_loss(model(b), b)["total"]
    opt.zero_grad(); loss.backward(); opt.step()
print(json.dumps({"baseline_mb": base, "peak_mb": peak_mb()}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args(argv)
    print(f"embedding_dim {args.dim}, float32, Adam (dense gradients), batch 1024\n")
    print("| table rows | parameters MB | + gradient + Adam state MB (arithmetic) | measured peak RSS MB | of which above start-up MB |")
    print("|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        out = subprocess.run([sys.executable, "-c", CHILD, str(rows), str(args.dim)], check=True,
                             capture_output=True, text=True).stdout
        measured = json.loads(out.strip().splitlines()[-1])
        params = rows * args.dim * 4 / 2**20
        print(f"| {rows:,} | {params:,.0f} | {4 * params:,.0f} | {measured['peak_mb']:,.0f} | "
              f"{measured['peak_mb'] - measured['baseline_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
