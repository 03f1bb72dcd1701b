"""Paired comparison of trained settings on the same test queries, with confidence intervals.

Seed-to-seed spread (what ``movielens_quality.py`` reports as ± std) is only part of the
uncertainty of a test metric: the test split is one sample of users, and with 943 users a
HitRate@10 near 0.2 has a standard error of about 0.013 from that alone. Two settings
evaluated on the *same* users are compared far more precisely by pairing: per query, the
difference of their outcomes. This script does that.

Each ``--runs LABEL DIR [DIR ...]`` is one setting, its DIRs the model_dirs of its seeds
(finished ``recframe.train`` runs with a test split). For every run the ``--split`` (test, or
valid: the same checkpoints on the validation data) is scored again by ``recframe.evaluate``
with its best checkpoint (the one the trainer tested; checked against the run's own record)
and ``--per_query_output`` (kept as ``<split>_ranks.parquet`` in the run directory, reused
when present). Per query, the metric is averaged over the
setting's seeds; the table gives for every setting its mean with a 95% interval over queries
(normal approximation: mean ± 1.96 sd / sqrt(n)), and for every setting after the first the
paired difference to the first one, its 95% interval, and how many queries it improves /
worsens. The intervals cover the sampling of test users given the seeds, not the choice of
seeds.

    python benchmarks/paired_comparison.py --metric hit_rate@10 \\
        --runs mean /tmp/enc/mean_seed1 /tmp/enc/mean_seed2 /tmp/enc/mean_seed3 \\
        --runs time_decay /tmp/enc/time_decay_seed1 /tmp/enc/time_decay_seed2 /tmp/enc/time_decay_seed3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from movielens_quality import validation_summary  # benchmarks/ is this script's folder

from recframe.config.loader import load_pipeline_config

Z95 = 1.959964


def per_query_values(ranks: np.ndarray, metric: str) -> np.ndarray:
    """The metric of each query from its target's rank (1-based, 0 = not retrieved).

    ``hit_rate@K``: 1 when 1 <= rank <= K; ``ndcg@K``: 1 / log2(rank + 1) there (one target);
    ``mrr``: 1 / rank (truncated at the evaluation's largest K, as recframe reports it).
    """
    found = ranks > 0
    if metric == "mrr":
        return np.where(found, 1.0 / np.maximum(ranks, 1), 0.0)
    name, _, k = metric.partition("@")
    if name not in ("hit_rate", "ndcg") or not k.isdigit():
        raise SystemExit(f"--metric: expected hit_rate@K, ndcg@K or mrr, got {metric!r}")
    within = found & (ranks <= int(k))
    if name == "hit_rate":
        return within.astype(np.float64)
    return np.where(within, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def load_ranks(model_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(item keys, ranks) of ``split`` ("test" or "valid") of a finished run, scored by the
    checkpoint the trainer tested (its best), cross-checked with the run's own record of it."""
    path = os.path.join(model_dir, f"{split}_ranks.parquet")
    with open(os.path.join(model_dir, "eval_result.json")) as f:
        tested = json.load(f).get("test")
    if tested is None:
        raise SystemExit(f"{model_dir}/eval_result.json: no test record (was test_input_path set?)")
    step = tested["checkpoint_step"]
    if split == "test":
        expected = tested["hit_rate@10"]
    else:  # the validation of that checkpoint, as logged during training
        expected = validation_summary(model_dir, step)["hit_rate@10"]
    if not os.path.exists(path):
        config_path = os.path.join(model_dir, "pipeline.config")
        config = load_pipeline_config(config_path)
        data_path = config.test_input_path if split == "test" else config.eval_input_path
        metrics_path = os.path.join(model_dir, f"eval_result_{split}_ranks.json")
        subprocess.run([sys.executable, "-m", "recframe.evaluate", "--pipeline_config", config_path,
                        "--model_dir", model_dir, "--checkpoint_path", "best", "--eval_input_path", data_path,
                        "--output", metrics_path, "--per_query_output", path],
                       check=True, stdout=subprocess.DEVNULL)
        with open(metrics_path) as f:
            again = json.load(f)
        if again["step"] != step or abs(again["hit_rate@10"] - expected) > 1e-9:
            os.remove(path)
            raise SystemExit(f"{model_dir}: the best checkpoint (step {again['step']}, {split} HR@10 "
                             f"{again['hit_rate@10']:.4f}) is not the one the trainer tested (step "
                             f"{step}, {expected:.4f})")
    table = pq.read_table(path)
    return table.column("item_key").to_numpy(), table.column("rank").to_numpy()


def interval(values: np.ndarray) -> float:
    """Half-width of the 95% normal interval of the mean of ``values``."""
    return Z95 * float(values.std(ddof=1)) / math.sqrt(len(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", action="append", required=True, metavar=("LABEL", "DIR"),
                        help="a setting: its label, then the model_dirs of its seeds (repeat per setting)")
    parser.add_argument("--metric", default="hit_rate@10", help="hit_rate@K, ndcg@K or mrr (default hit_rate@10)")
    parser.add_argument("--split", choices=("test", "valid"), default="test",
                        help="the split to compare on (default test); valid scores the same checkpoints "
                             "on the validation data")
    args = parser.parse_args(argv)
    settings = []
    for label, *dirs in args.runs:
        if not dirs:
            raise SystemExit(f"--runs {label}: no model_dir given")
        runs = [load_ranks(d, args.split) for d in dirs]
        targets = runs[0][0]
        for d, (keys, _) in zip(dirs, runs):
            if not np.array_equal(keys, targets):
                raise SystemExit(f"{d}: its test queries differ from {dirs[0]}'s (not the same test split)")
        settings.append((label, len(dirs), targets,
                         np.mean([per_query_values(r, args.metric) for _, r in runs], axis=0)))
    base_label, _, base_targets, base = settings[0]
    print(f"{args.split} {args.metric}, per query averaged over each setting's seeds; 95% intervals over the "
          f"{len(base)} {args.split} queries; Δ paired with {base_label}\n")
    print(f"| setting | seeds | {args.metric} | 95% interval | Δ vs {base_label} | 95% interval of Δ | "
          "queries better / worse |")
    print("|---|---:|---|---|---|---|---|")
    for label, seeds, targets, values in settings:
        cells = [label, str(seeds), f"{values.mean():.4f}", f"± {interval(values):.4f}"]
        if values is base:
            cells += ["", "", ""]
        else:
            if not np.array_equal(targets, base_targets):
                raise SystemExit(f"--runs {label}: its test queries differ from {base_label}'s")
            diff = values - base
            cells += [f"{diff.mean():+.4f}", f"± {interval(diff):.4f}",
                      f"{int((diff > 0).sum())} / {int((diff < 0).sum())}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
