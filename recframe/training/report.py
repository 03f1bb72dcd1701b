"""What a training run tells its user: the start banner, the test analysis, the closing line.

The trainer (:mod:`recframe.recipes.train`) prints :func:`start_banner` before its first step
(so a run is never silent until the first log step), writes :func:`test_analysis` next to
``eval_result.json`` after the test (``test_analysis.json``, plotted as ``recall_at_k.png`` and
``popularity.png``), and ends with :func:`closing_line`, which names every output it wrote.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from recframe.config.names import resolve_top_k
from recframe.metrics.analysis import popularity_buckets, recall_by_k

#: Files a run may leave in model_dir, in the order the closing line names them.
OUTPUTS = ("eval_result.json", "checkpoints/best.pt", "log.jsonl", "tensorboard/", "loss.png", "eval_metrics.png",
           "recall_at_k.png", "popularity.png", "test_analysis.json", "pipeline.config")


def count_parameters(model: torch.nn.Module, tables: list[torch.nn.Parameter]) -> tuple[int, int]:
    """(all trainable parameters, those in embedding tables)."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, sum(p.numel() for p in tables)


def start_banner(*, source: str, model_dir: str, device: torch.device, world_size: int, model_name: str,
                 parameters: tuple[int, int], rows: int | None, batch_size: int, steps_per_epoch: int,
                 epochs: int, total_steps: int, start_step: int, eval_path: str) -> str:
    """Two or three lines: where the run writes, on what, how big, how long."""
    total, in_tables = parameters
    where = f"{device}" + (f" x {world_size} processes" if world_size > 1 else "")
    lines = [f"recframe train: {source} -> {model_dir}/ ({where})",
             f"  model {model_name}: {total:,} parameters ({in_tables:,} in embedding tables)",
             f"  data: {f'{rows:,} training rows, ' if rows is not None else ''}batch {batch_size}, "
             f"{steps_per_epoch:,} steps per epoch x {epochs} epoch(s) = {total_steps:,} steps; evaluation on "
             f"{eval_path} after each epoch"]
    if start_step:
        lines.append(f"  resuming at step {start_step:,}")
    return "\n".join(lines)


def test_analysis(ranks: np.ndarray, target_counts: np.ndarray, eval_config, buckets: int = 5) -> dict:
    """The test's recall@K for every K and its recall by target popularity (the K of
    ``eval_config.best_metric`` when it has one, else the largest K)."""
    top_k = resolve_top_k(eval_config)
    metric = eval_config.best_metric
    k = int(metric.rsplit("@", 1)[1]) if "@" in metric and metric.rsplit("@", 1)[1].isdigit() else max(top_k)
    return {"queries": int(len(ranks)), "top_k": list(top_k), "recall_by_k": recall_by_k(ranks, max(top_k)).tolist(),
            "popularity_k": k, "popularity": popularity_buckets(target_counts, ranks, k, buckets)}


def closing_line(model_dir: str, seconds: float, result: dict) -> str:
    """The run's last line: how long, the test (or last evaluation) headline, every output."""
    minutes, secs = divmod(int(round(seconds)), 60)
    metrics = result.get("test") or result.get("eval") or {}
    headline = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                         if (k.startswith(("hit_rate@", "ndcg@")) or k in ("auc", "accuracy")) and isinstance(v, float))
    split = "test" if result.get("test") else "eval"
    present = [name for name in OUTPUTS if os.path.exists(os.path.join(model_dir, name.rstrip("/")))]
    return (f"done in {minutes} min {secs:02d} s; {split}: {headline or 'no metrics'}\n"
            f"outputs in {model_dir}/: {', '.join(present)}")


__all__ = ["OUTPUTS", "closing_line", "count_parameters", "start_banner", "test_analysis"]
