"""What a retrieval user reads from per-query ranks: recall@K for every K, and by item popularity.

Input: each query's 1-based rank of its target among the ranked catalogue items (after
exclusion; 0 = beyond the largest K evaluated), as kept by
:class:`recframe.recipes.evaluate.QueryRanks`. With one target per query, recall@K equals
HitRate@K: the share of queries with ``1 <= rank <= K``.

Popularity: the targets' counts among the training rows. Queries are sorted by that count and
cut into equal-size buckets, so each bucket's recall rests on as many queries as the others;
a model that only learns popularity does well on the last bucket and badly on the first (what
the logQ correction works against).

Example::

    ranks = np.array([1, 3, 0, 12, 2])
    recall_by_k(ranks, max_k=3)                # [0.2, 0.4, 0.6]
    popularity_buckets(np.array([1, 1, 5, 50, 9]), ranks, k=3, buckets=2)
"""

from __future__ import annotations

import numpy as np


def recall_by_k(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """(max_k,) recall@K for K = 1..max_k."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        return np.zeros(max_k)
    hits = np.bincount(ranks[(ranks >= 1) & (ranks <= max_k)], minlength=max_k + 1)[1:]
    return np.cumsum(hits) / len(ranks)


def popularity_buckets(target_counts: np.ndarray, ranks: np.ndarray, k: int, buckets: int = 5) -> list[dict]:
    """Recall@k of the queries cut into ``buckets`` equal-size groups by their target's training
    count, least popular first: [{"min_count", "max_count", "queries", "recall"}]."""
    target_counts, ranks = np.asarray(target_counts), np.asarray(ranks)
    order = np.argsort(target_counts, kind="stable")
    out = []
    for group in np.array_split(order, min(buckets, max(len(order), 1))):
        if not len(group):
            continue
        hit = (ranks[group] >= 1) & (ranks[group] <= k)
        out.append({"min_count": int(target_counts[group].min()), "max_count": int(target_counts[group].max()),
                    "queries": int(len(group)), "recall": float(hit.mean())})
    return out


__all__ = ["popularity_buckets", "recall_by_k"]
