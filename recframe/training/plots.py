"""A run's pictures (matplotlib): training curves from ``log.jsonl``, and the test's recall@K
curve and recall by item popularity."""

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


#: Evaluation series that are facts about the data, not the model (constant over a run).
_CONSTANTS = ("num_queries", "num_items")


def _metric_groups(curves: Curves) -> dict[str, list[str]]:
    """Eval series by metric name without @K and without raw_ ({"hit_rate": [...@10, ...@50,
    raw_...@10, ...]}); recall is left out where it equals hit rate (one target per query)."""
    groups: dict[str, list[tuple[int, int, str]]] = {}
    for name in curves:
        if not name.startswith("eval/"):
            continue
        key = name[len("eval/"):]
        if key in _CONSTANTS:
            continue
        raw = key.startswith("raw_")
        base, k = split_at_k(key[4:] if raw else key) or (key[4:] if raw else key, -1)
        groups.setdefault(base, []).append((int(raw), k, name))
    if "recall" in groups and "hit_rate" in groups and all(
            curves[r][1] == curves[r.replace("recall", "hit_rate")][1] for _, _, r in groups["recall"]
            if r.replace("recall", "hit_rate") in curves):
        del groups["recall"]
    order = sorted(groups, key=column_order)  # hit_rate, recall, ndcg, others
    return {base: [n for _, _, n in sorted(groups[base])] for base in order}


def _save_png(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _figure():
    """matplotlib's Figure, or None (with a warning) when it cannot be imported."""
    try:
        # The Agg canvas is attached per figure: no pyplot, no global backend switch, no
        # window, and a user's interactive matplotlib session is left alone.
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib cannot be imported: no plots written (pip install matplotlib)")
        return None
    return Figure


def write_curves(log_jsonl_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """Plot a run log: ``loss.png`` and ``eval_metrics.png`` in ``out_dir``.

    ``loss.png``: every train series whose key contains "loss" against the step.
    ``eval_metrics.png``: one panel per evaluation metric (hit rate, recall when it differs
    from hit rate, NDCG, MRR, ...), one line per K, the ``raw_`` variant dashed; the best
    checkpoint (the step the test scored) marked by a vertical line and its test values by
    stars. A file is skipped when there is nothing to draw. Returns the paths written.
    """
    Figure = _figure()
    if Figure is None:
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
        test_steps = {curves[n][0][-1] for n in curves if n.startswith("test/")}
        best_step = max(test_steps) if test_steps else None
        ncols = min(3, len(groups))
        nrows = math.ceil(len(groups) / ncols)
        fig = Figure(figsize=(4.5 * ncols, 3.5 * nrows))
        for i, (base, names) in enumerate(groups.items()):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            colors: dict[str, str] = {}
            for name in names:
                steps, values = curves[name]
                label = name[len("eval/"):]
                plain = label[4:] if label.startswith("raw_") else label
                line, = ax.plot(steps, values, marker="o", markersize=3, label=label,
                                linestyle="--" if label.startswith("raw_") else "-", color=colors.get(plain))
                colors.setdefault(plain, line.get_color())
                test = curves.get(f"test/{label}")
                if test is not None:
                    ax.plot(test[0][-1:], test[1][-1:], marker="*", markersize=12, linestyle="none",
                            color=line.get_color())
            if best_step is not None:
                ax.axvline(best_step, color="gray", linestyle=":", linewidth=1)
            ax.set_title(base if best_step is None else f"{base} (best step {best_step}, test *)")
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        fig.tight_layout()
        path = out / "eval_metrics.png"
        _save_png(fig, path)
        written.append(str(path))
    return written


def write_test_plots(analysis: dict, out_dir: str | os.PathLike) -> list[str]:
    """``recall_at_k.png`` (test recall@K for every K up to the largest evaluated) and
    ``popularity.png`` (test recall@K by target-popularity bucket) from the ``test_analysis``
    dict the trainer writes (:mod:`recframe.metrics.analysis`). Returns the paths written."""
    Figure = _figure()
    if Figure is None:
        return []
    out = Path(out_dir)
    written = []
    curve = analysis.get("recall_by_k") or []
    if curve:
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        ks = list(range(1, len(curve) + 1))
        ax.plot(ks, curve)
        for k in analysis.get("top_k", []):
            if k <= len(curve):
                ax.plot([k], [curve[k - 1]], marker="o", color="black")
                ax.annotate(f"{curve[k - 1]:.3f}", (k, curve[k - 1]), textcoords="offset points", xytext=(4, -12))
        ax.set_xlabel("K")
        ax.set_ylabel("recall@K")
        ax.set_title(f"test recall@K ({analysis.get('queries', 0):,} queries, best checkpoint)")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = out / "recall_at_k.png"
        _save_png(fig, path)
        written.append(str(path))
    buckets = analysis.get("popularity") or []
    if buckets:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        labels = [f"{b['min_count']}-{b['max_count']}" for b in buckets]
        bars = ax.bar(range(len(buckets)), [b["recall"] for b in buckets])
        for bar, b in zip(bars, buckets):
            ax.annotate(f"{b['recall']:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", textcoords="offset points", xytext=(0, 2))
        ax.set_xticks(range(len(buckets)), labels)
        ax.set_xlabel("target's count in the training rows (equal-size buckets of test queries)")
        ax.set_ylabel(f"recall@{analysis['popularity_k']}")
        ax.set_title("test recall by item popularity, least popular first")
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / "popularity.png"
        _save_png(fig, path)
        written.append(str(path))
    return written


def write_feature_importance_plot(ranking: dict[str, list[tuple[str, float]]], path: str | os.PathLike,
                                  top_k: int | None = None, title: str = "") -> str | None:
    """A horizontal bar chart of each group's feature keep probabilities (variational
    dropout), one panel per group, most important at the top; with ``top_k`` the bars of the
    features a pruning to the top K would keep are coloured, the others grey. ``ranking``:
    {group: [(feature, keep probability), ...] best first}. Returns the path, or None without
    matplotlib."""
    Figure = _figure()
    if Figure is None or not ranking:
        return None
    heights = [max(len(features), 1) for features in ranking.values()]
    fig = Figure(figsize=(7, 1.2 + 0.35 * sum(heights) + 0.6 * len(heights)))
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    for i, (group, features) in enumerate(ranking.items()):
        ax = fig.add_subplot(grid[i])
        names = [name for name, _ in features]
        values = [keep for _, keep in features]
        colors = ["tab:blue" if top_k is None or rank < top_k else "lightgray" for rank in range(len(features))]
        bars = ax.barh(range(len(features)), values, color=colors)
        for bar, value in zip(bars, values):
            ax.annotate(f"{value:.3f}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center",
                        textcoords="offset points", xytext=(3, 0), fontsize="small")
        ax.set_yticks(range(len(features)), names)
        ax.invert_yaxis()  # rank 1 at the top
        ax.set_xlim(0, 1.1)
        ax.set_title(f"group '{group}'" + (f" (top {top_k} kept, grey pruned)" if top_k is not None else ""),
                     fontsize="medium")
        ax.grid(True, axis="x", alpha=0.3)
    fig.axes[-1].set_xlabel("keep probability 1 - p_drop (variational dropout)")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    _save_png(fig, Path(path))
    return str(path)


__all__ = ["read_curves", "write_curves", "write_feature_importance_plot", "write_test_plots"]
