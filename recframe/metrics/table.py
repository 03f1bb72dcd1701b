"""Evaluation metrics as an aligned text table (one row per K), for commands and logs."""

from __future__ import annotations

import re
from typing import Any

_AT_K = re.compile(r"^(?P<name>.+)@(?P<k>\d+)$")
#: Column order of the table; other "@K" metrics follow in alphabetical order.
PREFERRED_COLUMNS = ("hit_rate", "recall", "ndcg")


def split_at_k(name: str) -> tuple[str, int] | None:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; None for a name without ``@K``."""
    m = _AT_K.match(name)
    return (m.group("name"), int(m.group("k"))) if m else None


def column_order(name: str) -> tuple[bool, int, str]:
    """Sort key of metric names: hit_rate, recall, ndcg, other names A-Z; then the same for
    the raw_ variants."""
    raw = name.startswith("raw_")
    base = name[len("raw_"):] if raw else name
    rank = PREFERRED_COLUMNS.index(base) if base in PREFERRED_COLUMNS else len(PREFERRED_COLUMNS)
    return raw, rank, base


def _fmt_value(value: Any) -> str:
    if hasattr(value, "item") and not isinstance(value, (bool, int, float, str)):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_metrics_table(metrics: dict[str, Any], title: str | None = None) -> str:
    """Format evaluation metrics as an aligned text table.

    Keys ``name@K`` (``hit_rate@10``, ``raw_ndcg@50``, ...) become a table with one row per
    K (ascending) and one column per name (hit_rate, recall, ndcg first, then the others
    alphabetically; then the ``raw_`` variants in the same order); a missing cell shows ``-``. Every other key
    (``mrr``, ``raw_mrr``, ``loss``, ...) is listed below the table as ``name  value``, in
    the order given. Floats are shown with 4 decimals.

    Example::

        K     hit_rate  recall  ndcg
        10    0.1000    0.1000  0.0500
        50    0.3000    0.3000  0.0900

        mrr  0.0400
    """
    at_k: dict[str, dict[int, Any]] = {}
    others: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        parts = split_at_k(str(key))
        if parts:
            at_k.setdefault(parts[0], {})[parts[1]] = value
        else:
            others.append((str(key), value))
    lines: list[str] = [title] if title else []
    if at_k:
        names = sorted(at_k, key=column_order)
        ks = sorted({k for per_k in at_k.values() for k in per_k})
        rows = [["K", *names]]
        rows += [[str(k), *(_fmt_value(at_k[n][k]) if k in at_k[n] else "-" for n in names)] for k in ks]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if others:
        if at_k:
            lines.append("")
        width = max(len(k) for k, _ in others)
        lines += [f"{k.ljust(width)}  {_fmt_value(v)}" for k, v in others]
    return "\n".join(lines)


__all__ = ["PREFERRED_COLUMNS", "column_order", "format_metrics_table", "split_at_k"]
