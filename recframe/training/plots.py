"""Training curves from ``log.jsonl`` as PNG files (the optional ``plots`` extra: matplotlib)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from recframe.files import atomic_write
from recframe.metrics.table import column_order, split_at_k
from recframe.training.run_log import NON_METRIC_KEYS

logger = logging.getLogger("recframe")

Curves = dict[str, tuple[list[int], list[float]]]


def read_curves(log_jsonl_path: str | os.PathLike) -> Curves:
    """Read the numeric series of a run log.

    Returns ``{"{type}/{key}": (steps, values)}`` for every numeric value of every record
    (e.g. ``"train/loss"``, ``"eval/hit_rate@50"``), except step / epoch / time. Steps are
    sorted ascending; when a step occurs twice for one series (a run resumed from an earlier
    checkpoint replays steps) the value logged last wins. Blank or unreadable lines
    (e.g. a line cut by a crash) are skipped.
    """
    series: dict[str, dict[int, float]] = {}
    with open(log_jsonl_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "step" not in rec:
                continue
            kind = rec.get("type", "train")
            for key, value in rec.items():
                if key in NON_METRIC_KEYS or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    series.setdefault(f"{kind}/{key}", {})[int(rec["step"])] = float(value)
    return {name: (sorted(pts), [pts[s] for s in sorted(pts)]) for name, pts in series.items()}


def _metric_groups(curves: Curves) -> dict[str, list[str]]:
    """Eval series grouped by metric name without @K: {"hit_rate": ["eval/hit_rate@10", ...]}."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for name in curves:
        if not name.startswith("eval/"):
            continue
        key = name[len("eval/"):]
        base, k = split_at_k(key) or (key, -1)
        groups.setdefault(base, []).append((k, name))
    order = sorted(groups, key=column_order)  # hit_rate, recall, ndcg, others; then raw_*
    return {base: [n for _, n in sorted(groups[base])] for base in order}


def _save_png(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def write_curves(log_jsonl_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """Plot a run log: ``loss.png`` and ``eval_metrics.png`` in ``out_dir``.

    ``loss.png``: every train series whose key contains "loss" against the step.
    ``eval_metrics.png``: one panel per evaluation metric (hit_rate, recall, ndcg, then the
    others such as mrr, then the raw_ variants), one line per K. A file is skipped when there is nothing to draw.

    Returns the paths written. When matplotlib is not installed, logs a warning naming the
    ``plots`` extra and returns [].
    """
    try:
        # The Agg canvas is attached per figure: no pyplot, no global backend switch, no
        # window, and a user's interactive matplotlib session is left alone.
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning(
            "matplotlib is not installed: no training curves written. "
            "Install the extra with: pip install 'recframe[plots]'"
        )
        return []

    curves = read_curves(log_jsonl_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    loss_names = [n for n in curves if n.startswith("train/") and "loss" in n[len("train/"):]]
    if loss_names:
        fig = Figure(figsize=(8, 4.5))
        ax = fig.add_subplot()
        for name in loss_names:
            steps, values = curves[name]
            ax.plot(steps, values, label=name[len("train/"):])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss")
        ax.grid(True, alpha=0.3)
        if len(loss_names) > 1:
            ax.legend()
        fig.tight_layout()
        path = out / "loss.png"
        _save_png(fig, path)
        written.append(str(path))

    groups = _metric_groups(curves)
    if groups:
        ncols = min(3, len(groups))
        nrows = math.ceil(len(groups) / ncols)
        fig = Figure(figsize=(4.5 * ncols, 3.5 * nrows))
        for i, (base, names) in enumerate(groups.items()):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            for name in names:
                steps, values = curves[name]
                label = name[len("eval/"):]
                ax.plot(steps, values, marker="o", markersize=3, label=label)
            ax.set_title(base)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        fig.tight_layout()
        path = out / "eval_metrics.png"
        _save_png(fig, path)
        written.append(str(path))
    return written


__all__ = ["read_curves", "write_curves"]
