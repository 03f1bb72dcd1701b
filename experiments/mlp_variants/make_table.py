"""Markdown table of the mlp_variants runs: held-out pointwise AUC / accuracy + full-corpus HR.

For each config and seed under --work_dir (runs of benchmarks/movielens_quality.py), scores
the final checkpoint and the best one (by validation HR@50, recframe's pick) with
evaluate_auc.py, and reads the full-corpus test metrics from eval_result.json.

    python experiments/mlp_variants/make_table.py --work_dir /tmp/mlp --seeds 1 2 3 \
        --configs experiments/mlp_variants/*.config
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_auc import main as evaluate_auc  # noqa: E402


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{spread}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work_dir", default="/tmp/mlp")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--configs", nargs="+", required=True)
    args = ap.parse_args()
    cols = ["seeds", "test AUC (final)", "test acc (final)", "valid AUC (final)",
            "test AUC (best HR@50 ckpt)", "train AUC (last log)", "HR@10", "HR@50"]
    print("| config | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for config in args.configs:
        name = os.path.splitext(os.path.basename(config))[0]
        acc = {c: [] for c in cols[1:]}
        seeds = []
        for seed in args.seeds:
            model_dir = os.path.join(args.work_dir, f"{name}_seed{seed}")
            if not os.path.exists(os.path.join(model_dir, "eval_result.json")):
                continue
            seeds.append(seed)
            out = {}
            for which in ("latest", "best"):
                with contextlib.redirect_stdout(io.StringIO()):
                    evaluate_auc(["--pipeline_config", config, "--model_dir", model_dir, "--checkpoint", which])
                with open(os.path.join(model_dir, "pointwise_metrics.json")) as f:
                    out[which] = json.load(f)
            with open(os.path.join(model_dir, "eval_result.json")) as f:
                test = json.load(f)["test"]
            with open(os.path.join(model_dir, "log.jsonl")) as f:
                train = [r for r in map(json.loads, f) if r["type"] == "train"][-1]
            acc["test AUC (final)"].append(out["latest"]["test"]["auc"])
            acc["test acc (final)"].append(out["latest"]["test"]["accuracy"])
            acc["valid AUC (final)"].append(out["latest"]["valid"]["auc"])
            acc["test AUC (best HR@50 ckpt)"].append(out["best"]["test"]["auc"])
            acc["train AUC (last log)"].append(train["auc"])
            acc["HR@10"].append(test["hit_rate@10"])
            acc["HR@50"].append(test["hit_rate@50"])
        print(f"| {name} | {','.join(map(str, seeds))} | " + " | ".join(fmt(acc[c]) for c in cols[1:]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
