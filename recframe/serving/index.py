"""Item indexes for top-K retrieval: exact (Flat) and approximate (IVF, HNSW) faiss indexes.

Scores are always inner products: for cosine similarity, L2-normalise both sides first
(:func:`normalize_rows`). Search results follow the conventions of
:mod:`recframe.metrics.retrieval`: best first, ties broken toward the lower item row,
excluded items never returned, ranks that cannot be filled hold score ``-inf`` and row -1.

Per-user exclusion with an approximate index searches ``k + (number of excluded items)``
neighbours and filters, which is exact with respect to the index: the k best non-excluded
items the index can find. Users are searched in chunks of similar exclusion counts, so a
few users with long histories do not enlarge every search.

faiss is an optional dependency (``pip install 'recframe[faiss]'``), imported only when an
index is built.
"""

from __future__ import annotations

import numpy as np
import torch

from recframe.config.names import INDEX_TYPES
from recframe.errors import RecframeError

__all__ = [
    "INDEX_TYPES",
    "MissingFaissError",
    "build_index",
    "default_nlist",
    "import_faiss",
    "index_recall",
    "normalize_rows",
    "search_index",
    "serialize_index",
]



class MissingFaissError(RecframeError, ImportError):
    """faiss is not installed (it is the optional extra ``recframe[faiss]``)."""


def import_faiss():
    """The ``faiss`` module, or :class:`MissingFaissError` naming the extra to install."""
    try:
        import faiss  # noqa: PLC0415 (optional dependency, imported lazily)
    except ImportError as e:
        raise MissingFaissError(
            "faiss is not installed; it is an optional extra: pip install 'recframe[faiss]' "
            f"(or pip install faiss-cpu) [{e}]"
        ) from e
    return faiss


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised like ``torch.nn.functional.normalize`` (eps 1e-12), float32."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.nn.functional.normalize(t, p=2.0, dim=1).numpy()


def default_nlist(num_items: int) -> int:
    """IVF lists: about 4 * sqrt(N), at most N / 39 (faiss wants >= 39 training points per list)."""
    return int(max(1, min(round(4 * num_items ** 0.5), num_items // 39)))


def build_index(
    item_emb: np.ndarray,
    kind: str,
    nlist: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 80,
):
    """A faiss inner-product index over ``item_emb`` (N, D); faiss label == item row.

    Args:
        item_emb: (N, D) float32 item embeddings (already normalised for cosine).
        kind: ``"flat"`` (IndexFlatIP), ``"ivf"`` (IndexIVFFlat over an IndexFlatIP
            quantizer, trained on the items) or ``"hnsw"`` (IndexHNSWFlat).
        nlist: IVF lists (default :func:`default_nlist`); must be in ``[1, N]``.
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW build-time candidate list size.
    """
    faiss = import_faiss()
    item_emb = np.ascontiguousarray(item_emb, dtype=np.float32)
    num_items, dim = item_emb.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = default_nlist(num_items) if nlist is None else int(nlist)
        if not 1 <= nlist <= max(num_items, 1):
            raise ValueError(f"--nlist must be in [1, number of items = {num_items}], got {nlist}")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(item_emb)
    elif kind == "hnsw":
        if hnsw_m < 2:
            raise ValueError(f"--hnsw_m must be >= 2, got {hnsw_m}")
        index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
    else:
        raise ValueError(f"index type must be one of {INDEX_TYPES}, got {kind!r}")
    index.add(item_emb)
    return index


def serialize_index(index) -> bytes:
    """The bytes ``faiss.write_index`` would write (readable by ``faiss.read_index``)."""
    return import_faiss().serialize_index(index).tobytes()


def _search_params(faiss, index, nprobe: int | None, ef_search: int | None, k: int):
    """faiss SearchParameters for one search of ``k`` neighbours, or None."""
    if isinstance(index, faiss.IndexIVF):
        nprobe = index.nlist if nprobe is None else min(int(nprobe), index.nlist)
        return faiss.SearchParametersIVF(nprobe=max(1, nprobe))
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=max(int(ef_search or 0), k))
    return None


def search_index(
    index,
    user_emb: np.ndarray,
    k: int,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item rows of every user from a faiss index, excluded items removed.

    Args:
        index: faiss index built by :func:`build_index` (labels are item rows).
        user_emb: (U, D) float32 user embeddings.
        k: results per user.
        exclude: ``(rows (M,), offsets (U + 1,))`` item rows to exclude per user, or None.
        nprobe: IVF lists visited per query (default: all lists).
        ef_search: HNSW search list size (raised to the number of neighbours asked).
        chunk_size: users searched at once.

    Returns:
        ``(scores (U, k) float32, rows (U, k) int64)``, best first, ties toward the lower
        row; unfilled ranks hold ``-inf`` and -1.
    """
    faiss = import_faiss()
    user_emb = np.ascontiguousarray(user_emb, dtype=np.float32)
    num_users, num_items = user_emb.shape[0], int(index.ntotal)
    out_scores = np.full((num_users, k), -np.inf, dtype=np.float32)
    out_rows = np.full((num_users, k), -1, dtype=np.int64)
    if num_users == 0 or num_items == 0:
        return out_scores, out_rows
    if exclude is None:
        ex_values, ex_offsets = np.zeros(0, np.int64), np.zeros(num_users + 1, np.int64)
    else:
        ex_values, ex_offsets = (np.asarray(a, dtype=np.int64) for a in exclude)
    counts = np.diff(ex_offsets)
    order = np.argsort(counts, kind="stable")  # chunks of similar exclusion counts
    base = num_items + 1
    for start in range(0, num_users, chunk_size):
        users = order[start : start + chunk_size]
        kk = int(min(num_items, k + counts[users].max()))
        params = _search_params(faiss, index, nprobe, ef_search, kk)
        scores, rows = index.search(user_emb[users], kk, params=params)
        drop = rows < 0
        if counts[users].sum():
            starts, lens = ex_offsets[users], counts[users]
            take = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
            keys = np.repeat(np.arange(len(users)), lens) * base + ex_values[take]
            q = np.arange(len(users))[:, None]
            drop |= np.isin(q * base + rows, keys)
        scores = np.where(drop, -np.inf, scores).astype(np.float32)
        rows = np.where(drop, num_items, rows)  # sorts after every real row
        sort = np.lexsort((rows, -scores), axis=-1)[:, :k]
        scores = np.take_along_axis(scores, sort, 1)
        rows = np.take_along_axis(rows, sort, 1)
        rows[scores == -np.inf] = -1
        out_scores[users, : rows.shape[1]] = scores
        out_rows[users, : rows.shape[1]] = rows
    out_rows[out_scores == -np.inf] = -1
    return out_scores, out_rows


def index_recall(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean over users of |approx top-K ∩ exact top-K| / |exact top-K| (-1 = empty rank).

    Users whose exact list is empty are skipped; 1.0 when there is no such user at all.
    """
    approx_rows = np.asarray(approx_rows, dtype=np.int64)
    exact_rows = np.asarray(exact_rows, dtype=np.int64)
    if approx_rows.shape[0] != exact_rows.shape[0]:
        raise ValueError(f"row counts differ: {approx_rows.shape} vs {exact_rows.shape}")
    base = int(max(approx_rows.max(initial=0), exact_rows.max(initial=0))) + 2
    q = np.arange(exact_rows.shape[0])[:, None]
    approx_keys = (q * base + approx_rows)[approx_rows >= 0]
    exact_valid = exact_rows >= 0
    found = np.isin(q * base + exact_rows, approx_keys) & exact_valid
    num_exact = exact_valid.sum(1)
    keep = num_exact > 0
    if not keep.any():
        return 1.0
    return float(np.mean(found.sum(1)[keep] / num_exact[keep]))
