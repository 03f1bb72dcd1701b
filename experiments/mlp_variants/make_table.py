"""Markdown table of the mlp_variants runs, read from recframe's own evaluation outputs.

For each config and seed under --work_dir (runs of benchmarks/movielens_quality.py):

- ``eval_result.json``: the test split's held-out ``auc`` / ``accuracy`` (eval_config.
  pointwise_metrics) and HR@10 / HR@50 of the checkpoint recframe kept as best (validation AUC,
  ``best_metric: "auc"``), and the validation AUC of the final evaluation;
- ``log.jsonl``: the validation AUC of the kept checkpoint (its eval record) and the trainer's
  training-batch ``auc`` of the last log window;
- ``eval_result_test_latest.json``: the test split scored with the final checkpoint by
  ``recframe evaluate --checkpoint_path latest`` (run here when it is missing).

    python experiments/mlp_variants/make_table.py --work_dir /tmp/mlp2 --seeds 1 2 3 \
        --configs experiments/mlp_variants/*.config
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

COLUMNS = ["seeds", "test AUC", "test acc", "valid AUC", "best epoch", "test AUC (final)", "test acc (final)",
           "valid AUC (final)", "train AUC (last log)", "HR@10", "HR@50"]


def fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.{digits}f}{spread}"


def final_test(model_dir: str) -> dict:
    """The test split scored with the final checkpoint (``recframe evaluate``), cached in model_dir."""
    out = os.path.join(model_dir, "eval_result_test_latest.json")
    if not os.path.exists(out):
        from recframe.config import load_pipeline_config

        config = os.path.join(model_dir, "pipeline.config")  # the run's resolved config
        cmd = [sys.executable, "-m", "recframe", "evaluate", "--pipeline_config", config, "--checkpoint_path",
               "latest", "--eval_input_path", load_pipeline_config(config).test_input_path, "--output", out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "RECFRAME_NO_PROGRESS": "1"})
    with open(out) as f:
        return json.load(f)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work_dir", default="/tmp/mlp2")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--configs", nargs="+", required=True)
    ap.add_argument("--steps_per_epoch", type=int, default=192, help="to show the kept checkpoint as an epoch")
    args = ap.parse_args()
    print("| config | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for config in args.configs:
        name = os.path.splitext(os.path.basename(config))[0]
        acc: dict[str, list[float]] = {c: [] for c in COLUMNS[1:]}
        seeds = []
        for seed in args.seeds:
            model_dir = os.path.join(args.work_dir, f"{name}_seed{seed}")
            if not os.path.exists(os.path.join(model_dir, "eval_result.json")):
                continue
            seeds.append(seed)
            with open(os.path.join(model_dir, "eval_result.json")) as f:
                result = json.load(f)
            with open(os.path.join(model_dir, "log.jsonl")) as f:
                records = [json.loads(line) for line in f if line.strip()]
            test, step = result["test"], result["test"]["checkpoint_step"]
            evals = [r for r in records if r["type"] == "eval"]
            chosen = [r for r in evals if r["step"] == step][-1]
            latest = final_test(model_dir)
            acc["test AUC"].append(test["auc"])
            acc["test acc"].append(test["accuracy"])
            acc["valid AUC"].append(chosen["auc"])
            acc["best epoch"].append(step / args.steps_per_epoch)
            acc["test AUC (final)"].append(latest["auc"])
            acc["test acc (final)"].append(latest["accuracy"])
            acc["valid AUC (final)"].append(evals[-1]["auc"])
            acc["train AUC (last log)"].append([r for r in records if r["type"] == "train"][-1]["auc"])
            acc["HR@10"].append(test["hit_rate@10"])
            acc["HR@50"].append(test["hit_rate@50"])
        cells = [fmt(acc[c], 1 if c == "best epoch" else 4) for c in COLUMNS[1:]]
        print(f"| {name} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
