"""Serving latency of exported towers against the eager model, printed as a Markdown table.

Trains nothing: it takes a pipeline config and a trained model_dir (best checkpoint), exports
both towers to a temporary directory, then measures on real rows of the config's data:

- user tower, one row per call: p50 / p99 latency of the eager model, the torch.export program
  and the compiled AOTInductor package (all fed the same pre-parsed tensors), and end to end
  through ``recframe.serving`` (raw row in, embedding out: parsing included) with either program;
- user tower at batch 256: rows/s, the same ways;
- item tower over the whole catalogue (``item_input_path``) through ``recframe.serving``: rows/s.

    recframe train --pipeline_config examples/dssm_movielens.config
    python benchmarks/serving_latency.py --pipeline_config examples/dssm_movielens.config
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import torch

from recframe.data.inputs import expand_input_paths
from recframe.recipes.export import export_towers
from recframe.pipeline import Pipeline
from recframe.serving import load_tower
from recframe.serving.tower import batch_to_tensors
from recframe.training.checkpoint import load_checkpoint, resolve_checkpoint


def read_rows(paths: str, num_rows: int) -> pa.Table:
    """The first ``num_rows`` rows of the first file of ``paths``."""
    import pyarrow.parquet as pq

    return pq.read_table(expand_input_paths(paths)[0]).slice(0, num_rows)


def timings(fn, repeats: int, warmup: int = 20) -> np.ndarray:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline_config", required=True)
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--checkpoint_path", default="best")
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pipeline = Pipeline.from_file(args.pipeline_config)
    model_dir = args.model_dir or pipeline.config.model_dir
    path = resolve_checkpoint(model_dir, args.checkpoint_path, args.pipeline_config)
    model = pipeline.build_model()
    model.load_state_dict(load_checkpoint(path, map_location="cpu")["model"])
    model.eval()
    export_dir = tempfile.mkdtemp(prefix="recframe-serving-") + "/export"
    export_towers(pipeline, model, export_dir, checkpoint=str(path))
    user = load_tower(export_dir + "/user")  # the compiled package on the CPU
    if user.runtime != "aoti":
        raise SystemExit("the export has no AOTInductor package (no C++ compiler?): nothing compiled to measure")
    exported_user = load_tower(export_dir + "/user")
    import torch.export as torch_export

    exported_user.program = torch_export.load(export_dir + "/user/tower.pt2").module()  # the uncompiled program
    item = load_tower(export_dir + "/item")

    users = read_rows(pipeline.config.eval_input_path, args.batch_size)
    one = users.slice(0, 1)
    rows = []
    with torch.no_grad():
        for label, table, repeats in (("1 row", one, args.repeats), (f"batch {args.batch_size}", users, max(args.repeats // 10, 20))):
            batch = user.parser(table)
            tensors = batch_to_tensors(batch, user.features)
            cases = {
                "eager model (parsed tensors)": lambda b=batch: model.user_embedding(b),
                "torch.export program (parsed tensors)": lambda t=tensors: exported_user.program(*t),
                "AOTInductor package (parsed tensors)": lambda t=tensors: user.program(*t),
                "recframe.serving, torch.export (raw rows, parsing included)": lambda tb=table: exported_user.embed(tb),
                "recframe.serving, AOTInductor (raw rows, parsing included)": lambda tb=table: user.embed(tb),
            }
            for name, fn in cases.items():
                seconds = timings(fn, repeats)
                rows.append((f"user tower, {label}", name, np.percentile(seconds, 50) * 1e3,
                             np.percentile(seconds, 99) * 1e3, table.num_rows / np.mean(seconds)))
        catalogue = read_rows(pipeline.config.item_input_path, 1 << 62)
        seconds = timings(lambda: item.embed(catalogue, batch_size=4096), 5, warmup=1)
        rows.append((f"item tower, {catalogue.num_rows} items", "recframe.serving, AOTInductor (raw rows)",
                     np.percentile(seconds, 50) * 1e3, np.percentile(seconds, 99) * 1e3,
                     catalogue.num_rows / np.mean(seconds)))

    print(f"torch {torch.__version__}, {args.threads} thread(s), checkpoint {path}\n")
    print("| case | path | p50 ms | p99 ms | rows/s |")
    print("|---|---|---:|---:|---:|")
    for case, name, p50, p99, rate in rows:
        print(f"| {case} | {name} | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
