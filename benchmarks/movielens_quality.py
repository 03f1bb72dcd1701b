"""Retrieval quality on MovieLens: train configs with several seeds, print a Markdown table.

Each (config, seed) is a full ``recframe.train`` run (validation picks the best checkpoint,
which is then evaluated once on the test split); the table reports the mean and standard
deviation over seeds of the test metrics (training items excluded) and of the raw ones, and
the validation HR@10 / HR@50 of the chosen checkpoints and the mean validation HR@10 of each
run's last 3 evaluations (``valid`` columns: the numbers to compare settings by; the test
columns are for reporting the chosen one). Configs with ``eval_config.pointwise_metrics``
(pointwise models) add the held-out ``auc`` / ``accuracy`` that recframe's evaluation reports:
validation AUC of the chosen checkpoint, test AUC and accuracy ("–" for the other configs).

    RECFRAME_DATA_DIR=../shared/data python benchmarks/movielens_quality.py \
        --configs examples/dssm_movielens.config --seeds 1 2 3 --work_dir /tmp/quality

Each run uses ``--threads`` CPU threads (``OMP_NUM_THREADS`` of the training process; default
1, as every published table): a run is deterministic per seed only at one thread count, since
the order of the parallel float reductions changes with it. The count is recorded beside each
run (``<run>.threads``); reusing or resuming a run at another count is refused.

Runs whose ``eval_result.json`` already exists under ``--work_dir`` are reused, so an
interrupted sweep continues where it stopped (use a fresh ``--work_dir`` to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

METRICS = ("hit_rate@10", "hit_rate@50", "ndcg@10", "mrr", "raw_hit_rate@10", "raw_hit_rate@50")
VALID_METRICS = ("hit_rate@10", "hit_rate@50", "last3 hit_rate@10")
#: Pointwise metrics (eval_config.pointwise_metrics): (record, metric), shown when a config has them.
POINTWISE_METRICS = (("valid", "auc"), ("test", "auc"), ("test", "accuracy"))


def run_one(config: str, seed: int, work_dir: str, edit: dict, threads: int = 1) -> dict:
    """Train ``config`` with ``seed`` (unless already done) and return its eval_result.json."""
    name = os.path.splitext(os.path.basename(config))[0]
    model_dir = os.path.join(work_dir, f"{name}_seed{seed}")
    result_path = os.path.join(model_dir, "eval_result.json")
    threads_path = os.path.join(work_dir, f"{name}_seed{seed}.threads")
    if os.path.exists(threads_path):
        with open(threads_path) as f:
            recorded = int(f.read())
        if recorded != threads:
            raise SystemExit(f"{model_dir}: trained with --threads {recorded}, asked for {threads}: a run is "
                             "deterministic per seed only at one thread count; use that count or another --work_dir")
    if not os.path.exists(result_path):
        overrides = {"train_config.seed": seed, **edit}
        cmd = [sys.executable, "-m", "recframe.train", "--pipeline_config", config,
               "--model_dir", model_dir, "--edit_config_json", json.dumps(overrides)]
        if os.path.exists(model_dir):
            cmd.append("--continue_train")
        env = {**os.environ, "RECFRAME_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(threads)}
        os.makedirs(work_dir, exist_ok=True)
        with open(threads_path, "w") as f:
            f.write(str(threads))
        with open(os.path.join(work_dir, f"{name}_seed{seed}.log"), "a") as log:
            subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    with open(result_path) as f:
        result = json.load(f)
    result["valid"] = validation_summary(model_dir, result["test"]["checkpoint_step"])
    return result


def validation_summary(model_dir: str, checkpoint_step: int) -> dict:
    """From the run's ``log.jsonl``: the validation record of the checkpoint the test split was
    scored with, plus ``last3 hit_rate@10``, the mean HR@10 of the last 3 validations."""
    with open(os.path.join(model_dir, "log.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r.get("type") == "eval"]
    chosen = [r for r in evals if r["step"] == checkpoint_step]
    if not chosen:
        raise SystemExit(f"{model_dir}/log.jsonl: no eval record at step {checkpoint_step} (the test checkpoint)")
    return {**chosen[-1], "last3 hit_rate@10": statistics.fmean(r["hit_rate@10"] for r in evals[-3:])}


def summarize(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {spread:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["examples/dssm_movielens.config"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--work_dir", default="runs/quality")
    parser.add_argument("--edit_config_json", default="{}", help="overrides applied to every run")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each training run (OMP_NUM_THREADS); the published tables use 1")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads: got {args.threads}, expected >= 1")
    edit = json.loads(args.edit_config_json)
    rows, runs = [], []
    for config in args.configs:
        results = [run_one(config, seed, args.work_dir, edit, args.threads) for seed in args.seeds]
        runs.append(results)
        cells = [summarize([r["valid"][m] for r in results]) for m in VALID_METRICS]
        cells += [summarize([r["test"][m] for r in results]) for m in METRICS]
        rows.append((config, cells))
    pointwise = [(split, m) for split, m in POINTWISE_METRICS if any(m in r[split] for rs in runs for r in rs)]
    for (_, cells), results in zip(rows, runs):
        cells += [summarize([r[split][m] for r in results]) if all(m in r[split] for r in results) else "–"
                  for split, m in pointwise]
    print(f"test split, mean ± std over seeds {args.seeds} ({args.threads} thread(s) per run); primary metrics exclude the user's training "
          "items (and the validation item), raw_ exclude nothing\n")
    header = [f"valid {m}" for m in VALID_METRICS] + list(METRICS)
    header += [f"{split} {m}" if split == "valid" else m for split, m in pointwise]
    print("| config | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for config, cells in rows:
        print(f"| {config} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
