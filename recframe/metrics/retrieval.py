"""Full-corpus top-K retrieval and its metrics (HitRate@K, Recall@K, NDCG@K, MRR).

Every item of the catalogue is a candidate for every query. Scores are inner products
``user_emb @ item_emb.T``, computed in chunks of users so that memory stays bounded by
``chunk_size x num_items`` scores (e.g. 256 x 1M float32 = 1 GiB), and the top K are exact.

Jagged per-query lists (excluded items, target items) are ``(values, offsets)`` pairs, the
same layout as :class:`recframe.batch.SparseIds` (which is accepted too):
``values`` (M,) int64 item rows and ``offsets`` (Q + 1,) int64 with ``offsets[0] == 0`` and
``offsets[-1] == M``; query ``q`` owns ``values[offsets[q]:offsets[q + 1]]``.

Conventions (all tested in ``tests/test_retrieval_metrics.py``):

- Ranking order is descending score, ties broken toward the **lower item index**; the
  result is exact and independent of ``chunk_size``.
- Excluded items get score ``-inf`` and are never returned. Ranks that cannot be filled
  (``k`` larger than the number of non-excluded items) hold score ``-inf`` and index ``-1``
  and count as misses.
- A target that is also in the exclusion list stays a candidate: :func:`evaluate_retrieval`
  removes targets from the exclusion list before scoring
  (:func:`remove_targets_from_exclusion`). The MovieLens protocol never produces this case.
- Duplicate targets of a query count once. Queries without targets are skipped (not counted).
- ``mrr`` is the reciprocal rank of the first target **within the largest K**, 0 if none
  (truncated MRR, so it depends on ``max(top_k)``).
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from recframe.batch import SparseIds, jagged_row_ids

__all__ = [
    "RetrievalMetrics",
    "merge_top_k",
    "evaluate_retrieval",
    "exact_top_k",
    "remove_targets_from_exclusion",
]

Jagged = Union[tuple[Tensor, Tensor], SparseIds]
"""``(values (M,), offsets (Q + 1,))`` int64 tensors, or any object with ``.values``/``.offsets``."""

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------
# jagged helpers
# --------------------------------------------------------------------------------------


def _as_jagged(jagged: Jagged, num_rows: int, name: str) -> tuple[Tensor, Tensor]:
    """Validates a jagged list and returns ``(values (M,), offsets (num_rows + 1,))`` int64."""
    if hasattr(jagged, "values") and hasattr(jagged, "offsets"):
        values, offsets = jagged.values, jagged.offsets  # type: ignore[union-attr]
    else:
        values, offsets = jagged  # type: ignore[misc]
    values = torch.as_tensor(values).to(torch.int64).reshape(-1)
    offsets = torch.as_tensor(offsets).to(torch.int64).reshape(-1)
    if offsets.numel() != num_rows + 1:
        raise ValueError(
            f"{name}: offsets must have {num_rows + 1} entries (rows + 1), got {offsets.numel()}"
        )
    if int(offsets[0]) != 0 or int(offsets[-1]) != values.numel():
        raise ValueError(
            f"{name}: offsets must start at 0 and end at len(values)={values.numel()}, "
            f"got {int(offsets[0])} .. {int(offsets[-1])}"
        )
    if num_rows > 0 and bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"{name}: offsets must be non-decreasing")
    return values, offsets


def _check_item_range(values: Tensor, num_items: int, name: str) -> None:
    """Raises if some item index in ``values`` is outside ``[0, num_items)``."""
    bad = (values < 0) | (values >= num_items)
    if bool(bad.any()):
        examples = values[bad][:5].tolist()
        raise ValueError(
            f"{name}: {int(bad.sum())} item indices are outside [0, {num_items}), e.g. {examples}"
        )


def _offsets_from_rows(rows: Tensor, num_rows: int) -> Tensor:
    """(num_rows + 1,) offsets of a jagged list whose values belong to sorted ``rows`` (M,)."""
    counts = torch.bincount(rows, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def remove_targets_from_exclusion(
    exclude: Jagged, targets: Jagged, num_queries: int
) -> tuple[Tensor, Tensor]:
    """Drops from each query's excluded items the ones that are also its targets.

    Args:
        exclude: jagged excluded item rows, ``offsets`` (Q + 1,).
        targets: jagged target item rows, ``offsets`` (Q + 1,).
        num_queries: Q.

    Returns:
        ``(values (M',), offsets (Q + 1,))`` int64: the exclusion lists without the targets,
        in their original order.
    """
    ex_values, ex_offsets = _as_jagged(exclude, num_queries, "exclude")
    t_values, t_offsets = _as_jagged(targets, num_queries, "targets")
    if ex_values.numel() == 0 or t_values.numel() == 0:
        return ex_values, ex_offsets
    ex_rows, t_rows = jagged_row_ids(ex_offsets), jagged_row_ids(t_offsets)
    base = int(torch.maximum(ex_values.max(), t_values.max())) + 1
    keep = ~torch.isin(ex_rows * base + ex_values, t_rows * base + t_values)
    return ex_values[keep], _offsets_from_rows(ex_rows[keep], num_queries)


# --------------------------------------------------------------------------------------
# exact top-K
# --------------------------------------------------------------------------------------


def _sort_by_score_then_index(scores: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sorts each row by (descending score, ascending index).

    Args:
        scores: (R, C) candidate scores.
        indices: (R, C) distinct item indices of the candidates.

    Returns:
        ``(scores (R, C), indices (R, C))`` reordered.
    """
    order = torch.argsort(indices, dim=1)
    scores, indices = scores.gather(1, order), indices.gather(1, order)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return scores.gather(1, order), indices.gather(1, order)


def _top_k_with_boundary_ties(scores: Tensor, threshold: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k of rows whose k-th score is tied with items outside the topk() answer.

    Takes every item scoring at least the k-th score (all of them, whatever topk picked),
    then keeps the k first by (descending score, ascending index).

    Args:
        scores: (R, N) scores.
        threshold: (R,) the k-th largest score of each row.
        k: number of results, ``k < N``.

    Returns:
        ``(scores (R, k), indices (R, k))``.
    """
    num_candidates = int((scores >= threshold.unsqueeze(1)).sum(1).max())
    values, indices = torch.topk(scores, num_candidates, dim=1)
    values, indices = _sort_by_score_then_index(values, indices)
    return values[:, :k], indices[:, :k]


def _top_k_rows(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact, deterministic top-k of each row (ties toward the lower index).

    Args:
        scores: (C, N) scores, excluded items already ``-inf``.
        k: number of results, ``1 <= k <= N``.

    Returns:
        ``(scores (C, k), indices (C, k))``; entries with score ``-inf`` have index -1.
    """
    num_items = scores.shape[1]
    if k < num_items:
        # One extra: if the (k+1)-th score equals the k-th, topk's choice among the tied
        # items is arbitrary and those rows are redone exactly.
        values, indices = torch.topk(scores, k + 1, dim=1)
        straddle = (values[:, k] == values[:, k - 1]) & (values[:, k - 1] > _NEG_INF)
        values, indices = values[:, :k].clone(), indices[:, :k].clone()
        if bool(straddle.any()):
            rows = straddle.nonzero().squeeze(1)
            values[rows], indices[rows] = _top_k_with_boundary_ties(
                scores[rows], values[rows, k - 1], k
            )
    else:
        values, indices = torch.topk(scores, k, dim=1)
    values, indices = _sort_by_score_then_index(values, indices)
    return values, indices.masked_fill(values == _NEG_INF, -1)


def _mask_excluded_(scores: Tensor, ex_rows: Tensor, ex_items: Tensor, item_start: int) -> None:
    """Sets ``scores[r, i - item_start] = -inf`` for every excluded (row r, item i) of the chunk.

    Args:
        scores: (users of the chunk, items of the chunk) scores, modified in place.
        ex_rows, ex_items: (M,) row in the user chunk and item index of each exclusion.
        item_start: first item index of the chunk.
    """
    inside = (ex_items >= item_start) & (ex_items < item_start + scores.shape[1])
    if bool(inside.any()):
        scores[ex_rows[inside], ex_items[inside] - item_start] = _NEG_INF


def merge_top_k(values: Sequence[Tensor], indices: Sequence[Tensor], k: int) -> tuple[Tensor, Tensor]:
    """The k best of several top lists of the same users, in the order of :func:`exact_top_k`.

    Args:
        values, indices: (U, k_i) scores and distinct item indices of each list (e.g. one per
            item chunk or per rank's item shard), -1 / -inf for empty ranks.
    Returns:
        ``(scores (U, k), indices (U, k))``: descending score, ties toward the lower item index;
        ranks that cannot be filled hold -inf and -1. Exact when each list holds the exact top
        of its items in that order.
    """
    v, i = torch.cat(list(values), dim=1), torch.cat(list(indices), dim=1)
    v, i = _sort_by_score_then_index(v, i.masked_fill(v == _NEG_INF, torch.iinfo(torch.int64).max))
    v, i = v[:, :k], i[:, :k]
    if v.shape[1] < k:  # fewer candidates than k in all
        pad = k - v.shape[1]
        v = torch.cat([v, v.new_full((v.shape[0], pad), _NEG_INF)], dim=1)
        i = torch.cat([i, i.new_full((i.shape[0], pad), -1)], dim=1)
    return v, i.masked_fill(v == _NEG_INF, -1)


def _all_finite(x: Tensor, rows: int = 65536) -> bool:
    """No NaN or inf in ``x``, checked ``rows`` rows at a time (a whole-catalogue mask would
    cost several times the embeddings' memory)."""
    return all(bool(torch.isfinite(x[start:start + rows]).all()) for start in range(0, x.shape[0], rows))


def exact_top_k(
    user_emb: Tensor,
    item_emb: Tensor,
    k: int,
    exclude: Jagged | None = None,
    chunk_size: int = 1024,
    item_chunk_size: int = 0,
) -> tuple[Tensor, Tensor]:
    """Exact top-k items of every user by inner product, optionally excluding items.

    Scores ``user_emb @ item_emb.T`` are computed ``chunk_size`` users x ``item_chunk_size``
    items at a time and the per-chunk top lists merged, so peak memory is about
    ``chunk_size * item_chunk_size`` scores (plus top-k workspace) whatever the catalogue size.
    Order: descending score, ties broken toward the lower item index; the result does not
    depend on the chunk sizes (up to the float rounding of the matrix product).

    Args:
        user_emb: (U, D) user embeddings.
        item_emb: (N, D) item embeddings, same dtype and device as ``user_emb``.
        k: number of results per user (may exceed N or the number of non-excluded items).
        exclude: jagged item indices to remove per user, ``offsets`` (U + 1,), or None.
        chunk_size: users scored at once.
        item_chunk_size: items scored at once; 0 = every item at once.

    Returns:
        ``(scores (U, k), indices (U, k))``, indices int64. Ranks that cannot be filled
        (excluded or beyond N) have score ``-inf`` and index -1.
    """
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(
            f"expected user_emb (U, D) and item_emb (N, D), got {tuple(user_emb.shape)} "
            f"and {tuple(item_emb.shape)}"
        )
    if k < 1 or chunk_size < 1 or item_chunk_size < 0:
        raise ValueError(f"k and chunk_size must be >= 1 and item_chunk_size >= 0, got k={k}, "
                         f"chunk_size={chunk_size}, item_chunk_size={item_chunk_size}")
    if not (_all_finite(user_emb) and _all_finite(item_emb)):
        raise ValueError("user_emb and item_emb must be finite (no NaN / inf)")
    num_users, num_items = user_emb.shape[0], item_emb.shape[0]
    device = user_emb.device
    out_scores = torch.full((num_users, k), _NEG_INF, dtype=user_emb.dtype, device=device)
    out_indices = torch.full((num_users, k), -1, dtype=torch.int64, device=device)
    if num_items == 0 or num_users == 0:
        return out_scores, out_indices

    ex_values = ex_offsets = None
    if exclude is not None:
        ex_values, ex_offsets = _as_jagged(exclude, num_users, "exclude")
        _check_item_range(ex_values, num_items, "exclude")
        ex_values, ex_offsets = ex_values.to(device), ex_offsets.cpu()

    item_chunk = min(item_chunk_size or num_items, num_items)
    # One buffer for all chunks: a fresh chunk x items tensor per chunk costs page faults
    # comparable to the matrix product itself on CPU.
    buffer = torch.empty(min(chunk_size, num_users) * item_chunk, dtype=user_emb.dtype, device=device)
    for start in range(0, num_users, chunk_size):
        end = min(start + chunk_size, num_users)
        ex_rows = ex_items = None
        if ex_values is not None:
            lo, hi = int(ex_offsets[start]), int(ex_offsets[end])
            ex_rows = jagged_row_ids(ex_offsets[start:end + 1] - lo).to(device)
            ex_items = ex_values[lo:hi]
        values, indices = [], []
        for item_start in range(0, num_items, item_chunk):
            item_end = min(item_start + item_chunk, num_items)
            # A contiguous prefix of the buffer (a [:rows, :cols] slice of it would not be, and
            # matmul would write a temporary first).
            scores = buffer[: (end - start) * (item_end - item_start)].view(end - start, item_end - item_start)
            torch.matmul(user_emb[start:end], item_emb[item_start:item_end].t(), out=scores)
            if ex_rows is not None:
                _mask_excluded_(scores, ex_rows, ex_items, item_start)
            v, i = _top_k_rows(scores, min(k, item_end - item_start))
            values.append(v)
            indices.append(torch.where(i >= 0, i + item_start, i))
            if len(values) == 2:  # keep the running top k
                v, i = merge_top_k(values, indices, k)
                values, indices = [v], [i]
        v, i = merge_top_k(values, indices, k) if values[0].shape[1] != k else (values[0], indices[0])
        out_scores[start:end], out_indices[start:end] = v, i
    return out_scores, out_indices


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------


def _hit_matrix(top_indices: Tensor, t_values: Tensor, t_offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Which returned items are targets.

    Args:
        top_indices: (Q, L) distinct item indices per row, -1 = empty rank.
        t_values: (M,) target item indices; t_offsets: (Q + 1,) their offsets.

    Returns:
        ``(hits (Q, L) bool, num_targets (Q,) int64)``, duplicate targets counted once.
    """
    num_queries = top_indices.shape[0]
    device = top_indices.device
    t_values, t_offsets = t_values.to(device), t_offsets.to(device)
    if t_values.numel() == 0:
        zeros = torch.zeros(num_queries, dtype=torch.int64, device=device)
        return torch.zeros_like(top_indices, dtype=torch.bool), zeros
    base = int(torch.maximum(top_indices.max(), t_values.max())) + 1
    t_keys = torch.unique(jagged_row_ids(t_offsets) * base + t_values)
    num_targets = torch.bincount(t_keys // base, minlength=num_queries)
    q = torch.arange(num_queries, device=device).unsqueeze(1)
    hits = torch.isin(q * base + top_indices, t_keys) & (top_indices >= 0)
    return hits, num_targets


def _per_query_metrics(hits: Tensor, num_targets: Tensor, top_k: Sequence[int]) -> Tensor:
    """Metric values of every query that has at least one target.

    Args:
        hits: (Q, L) bool, ``L >= max(top_k)``.
        num_targets: (Q,) distinct targets per query.
        top_k: sorted cut-offs.

    Returns:
        (Q', 3 * len(top_k) + 1) float64, Q' = queries with targets; columns
        ``hit_rate@K, recall@K, ndcg@K`` per K, then ``mrr``.
    """
    keep = num_targets > 0
    k_max = top_k[-1]
    hits = hits[keep, :k_max].to(torch.float64)
    n_t = num_targets[keep].to(torch.float64)
    ranks = torch.arange(k_max, dtype=torch.float64, device=hits.device)
    discount = 1.0 / torch.log2(ranks + 2.0)
    ideal = torch.cumsum(discount, 0)
    cum_hits = torch.cumsum(hits, 1)
    cum_dcg = torch.cumsum(hits * discount, 1)
    columns = []
    for k in top_k:
        found = cum_hits[:, k - 1]
        idcg = ideal[torch.clamp(num_targets[keep], max=k) - 1]
        columns += [(found > 0).to(torch.float64), found / n_t, cum_dcg[:, k - 1] / idcg]
    first = hits.argmax(1).to(torch.float64)  # first maximum = first hit
    columns.append(torch.where(hits.any(1), 1.0 / (first + 1.0), torch.zeros_like(first)))
    return torch.stack(columns, 1)


class RetrievalMetrics:
    """Streaming HitRate@K, Recall@K, NDCG@K (binary relevance) and truncated MRR.

    Per query with targets T and returned list R (ranks 1..K):

    - ``hit_rate@K`` = 1 if some target is in R[:K];
    - ``recall@K`` = |T ∩ R[:K]| / |T|;
    - ``ndcg@K`` = sum over hits of 1 / log2(rank + 1), divided by the same sum over ranks
      1..min(|T|, K);
    - ``mrr`` = 1 / rank of the first target within the largest K, 0 if none.

    Each reported value is the mean over queries with at least one target. The state is
    two plain tensors, ``sums`` (num_metrics,) float64 and ``count`` () int64, so a
    distributed evaluation can ``all_reduce`` both and then call :meth:`compute`.

    Args:
        top_k: cut-offs K.
    """

    def __init__(self, top_k: Sequence[int] = (10, 50, 100)) -> None:
        ks = sorted({int(k) for k in top_k})
        if not ks or ks[0] < 1:
            raise ValueError(f"top_k must be non-empty and >= 1, got {list(top_k)}")
        self.top_k: list[int] = ks
        self.names: list[str] = [
            f"{name}@{k}" for k in ks for name in ("hit_rate", "recall", "ndcg")
        ] + ["mrr"]
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.int64)

    def update(self, top_indices: Tensor, targets: Jagged | Tensor) -> None:
        """Adds a batch of queries.

        Args:
            top_indices: (Q, L) returned item indices per query, best first, distinct per
                row, -1 = empty rank; ``L >= max(top_k)`` (extra columns are ignored).
            targets: jagged target item indices with offsets (Q + 1,), or a (Q,) tensor
                holding one target per query.
        """
        if top_indices.dim() != 2 or top_indices.shape[1] < self.top_k[-1]:
            raise ValueError(
                f"top_indices must be (Q, L) with L >= {self.top_k[-1]}, "
                f"got {tuple(top_indices.shape)}"
            )
        t_values, t_offsets = _as_targets(targets, top_indices.shape[0])
        if t_values.numel() and int(t_values.min()) < 0:
            raise ValueError("targets: item indices must be >= 0 (map unknown ids first)")
        hits, num_targets = _hit_matrix(top_indices, t_values, t_offsets)
        values = _per_query_metrics(hits, num_targets, self.top_k)
        self.sums += values.sum(0).cpu()
        self.count += values.shape[0]

    def merge(self, other: "RetrievalMetrics") -> None:
        """Adds the state of another accumulator with the same ``top_k``."""
        if other.names != self.names:
            raise ValueError(f"cannot merge metrics {other.names} into {self.names}")
        self.sums += other.sums.to(self.sums.device)
        self.count += other.count.to(self.count.device)

    def reset(self) -> None:
        """Forgets every query seen so far."""
        self.sums.zero_()
        self.count.zero_()

    def compute(self) -> dict[str, float]:
        """Mean of every metric over the queries seen, keyed by ``self.names``."""
        count = int(self.count)
        if count == 0:
            raise ValueError("RetrievalMetrics.compute(): no query with a target was seen")
        return {name: float(s) / count for name, s in zip(self.names, self.sums.tolist())}


def _as_targets(targets: Jagged | Tensor, num_queries: int) -> tuple[Tensor, Tensor]:
    """Targets as jagged ``(values, offsets (Q + 1,))``; a (Q,) tensor is one per query."""
    if isinstance(targets, (Tensor, np.ndarray)):
        values = torch.as_tensor(targets).to(torch.int64).reshape(-1)
        if values.numel() != num_queries:
            raise ValueError(f"targets: expected {num_queries} values, got {values.numel()}")
        return values, torch.arange(num_queries + 1, dtype=torch.int64)
    return _as_jagged(targets, num_queries, "targets")


def evaluate_retrieval(
    user_emb: Tensor,
    item_emb: Tensor,
    targets: Jagged | Tensor,
    exclude: Jagged | None = None,
    top_k: Sequence[int] = (10, 50, 100),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Full-corpus metrics of one set of users in one call.

    Targets are removed from the exclusion lists first (a target stays a candidate).

    Args:
        user_emb: (U, D) user embeddings.
        item_emb: (N, D) item embeddings.
        targets: jagged target item rows with offsets (U + 1,), or (U,) one per user.
        exclude: jagged item rows to exclude with offsets (U + 1,), or None.
        top_k: cut-offs K.
        chunk_size: users scored at once (memory ~ chunk_size * N scores).

    Returns:
        ``{"hit_rate@K", "recall@K", "ndcg@K" for each K, "mrr"}`` -> mean over users
        with at least one target.
    """
    num_users, num_items = user_emb.shape[0], item_emb.shape[0]
    t_values, t_offsets = _as_targets(targets, num_users)
    _check_item_range(t_values, num_items, "targets")
    if exclude is not None:
        exclude = remove_targets_from_exclusion(exclude, (t_values, t_offsets), num_users)
    metrics = RetrievalMetrics(top_k)
    _, indices = exact_top_k(user_emb, item_emb, metrics.top_k[-1], exclude, chunk_size)
    metrics.update(indices, (t_values, t_offsets))
    return metrics.compute()
