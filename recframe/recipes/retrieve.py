"""Top-K items per user from item / user embedding files (``recframe retrieve``).

Builds an item index (exact ``flat``, or approximate faiss ``ivf`` / ``hnsw``), queries it
with every user embedding and writes the top K per user. With ``--ground_truth`` (one row
per user: its target item and optionally a list of items to exclude, like recframe's
evaluation data), reports HitRate/Recall/NDCG@K and MRR with the metric code of
``recframe.evaluate`` (:mod:`recframe.metrics.retrieval`); with an approximate index, also
``index_recall@K``: the overlap of its top K with the exact top K.

The ``flat`` index is searched with :func:`recframe.metrics.retrieval.exact_top_k`, the
very ranking ``recframe.evaluate`` uses, so its metrics equal evaluate's on the same
embeddings and it needs no faiss (faiss is only needed for ``--index_path``); it runs on
``--device`` (a GPU too), ``--chunk_size`` users x ``--item_chunk_size`` items of scores at a
time. The faiss indexes run on the CPU.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recframe.device import resolve_device
from recframe.errors import RecframeError
from recframe.metrics.item_index import ItemIndex
from recframe.metrics.retrieval import RetrievalMetrics, exact_top_k, remove_targets_from_exclusion
from recframe.serving.index import (
    build_index,
    import_faiss,
    index_recall,
    normalize_rows,
    search_index,
    serialize_index,
)
from recframe.files import atomic_write, check_output_path
from recframe.metrics.table import format_metrics_table

EMBEDDING_COLUMN = "embedding"


class RetrieveError(RecframeError, ValueError):
    """A user error in the arguments or the input files (reported as one line, exit 2)."""


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------


def _read_parquet(path: str, flag: str) -> pa.Table:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: file {path!r} does not exist")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise RetrieveError(f"{flag}: cannot read {path!r} as Parquet: {e}") from e


def read_embeddings(path: str, id_column: str | None, flag: str,
                    unique: bool = True) -> tuple[pa.Array, np.ndarray, str]:
    """``(ids (N,), embeddings (N, D) float32, id column name)`` of an embeddings file.

    The id column defaults to the first column that is not ``embedding``; ids must be
    non-null (and distinct if ``unique``), embeddings non-null, finite lists of one length.
    """
    table = _read_parquet(path, flag)
    names = table.column_names
    if EMBEDDING_COLUMN not in names:
        raise RetrieveError(f"{flag}: {path!r} has no {EMBEDDING_COLUMN!r} column (columns: {names})")
    if id_column is None:
        others = [n for n in names if n != EMBEDDING_COLUMN]
        if not others:
            raise RetrieveError(f"{flag}: {path!r} has no id column besides {EMBEDDING_COLUMN!r}")
        id_column = others[0]
    elif id_column not in names:
        raise RetrieveError(f"{flag}: {path!r} has no id column {id_column!r} (columns: {names})")
    ids = table.column(id_column).combine_chunks()
    if ids.null_count:
        raise RetrieveError(f"{flag}: {path!r}: {ids.null_count} null ids in column {id_column!r}")
    if unique and len(ids) and pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        raise RetrieveError(f"{flag}: {path!r}: {len(dup)} duplicated ids in column {id_column!r}, "
                            f"e.g. {dup[:5].to_pylist()}")
    column = table.column(EMBEDDING_COLUMN).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)) or not pa.types.is_floating(column.type.value_type):
        raise RetrieveError(f"{flag}: {path!r}: column {EMBEDDING_COLUMN!r} must be a list of floats, "
                            f"got {column.type}")
    if column.null_count:
        raise RetrieveError(f"{flag}: {path!r}: {column.null_count} null embeddings")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    dim = int(lengths[0]) if len(lengths) else 0
    if len(lengths) and (lengths != dim).any():
        bad = np.flatnonzero(lengths != dim)
        raise RetrieveError(f"{flag}: {path!r}: embeddings must all have the same length; row 0 has {dim}, "
                            f"row {int(bad[0])} has {int(lengths[bad[0]])} ({bad.size} rows differ)")
    values = np.array(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)  # writable copy
    if not np.isfinite(values).all():
        raise RetrieveError(f"{flag}: {path!r}: embeddings contain NaN or inf")
    return ids, values.reshape(len(ids), dim), id_column


def metric_from_export(export_dir: str) -> str:
    """``"ip"`` or ``"cosine"`` from the ``tower.json`` files of an export directory.

    Reads ``D/user/tower.json`` and ``D/item/tower.json`` (or ``D/tower.json``). COSINE
    towers whose outputs are all ``normalized`` are searched by plain inner product.
    """
    root = Path(export_dir)
    files = [p for p in (root / "user" / "tower.json", root / "item" / "tower.json", root / "tower.json")
             if p.is_file()]
    if not files:
        raise FileNotFoundError(f"--export_dir: no tower.json in {export_dir!r} (looked in user/, item/ and itself)")
    similarities, normalized = set(), []
    for path in files:
        try:
            meta = json.loads(path.read_text())
            similarities.add(str(meta["similarity"]).upper())
            normalized.append(bool(meta.get("normalized", False)))
        except (ValueError, KeyError, TypeError) as e:
            raise RetrieveError(f"--export_dir: {str(path)!r} has no valid 'similarity' ({e!r})") from e
    if len(similarities) != 1:
        raise RetrieveError(f"--export_dir: the towers disagree on the similarity: {sorted(similarities)}")
    similarity = similarities.pop()
    if similarity == "INNER_PRODUCT":
        return "ip"
    if similarity == "COSINE":
        return "ip" if all(normalized) else "cosine"
    raise RetrieveError(f"--export_dir: unknown similarity {similarity!r} (expected COSINE or INNER_PRODUCT)")


def resolve_metric(metric: str | None, export_dir: str | None) -> str:
    """The search metric from ``--metric`` and/or ``--export_dir`` (default ``ip``)."""
    if export_dir is None:
        return metric or "ip"
    derived = metric_from_export(export_dir)
    # "cosine" on towers that already normalise is the same ranking as "ip".
    if metric is not None and metric != derived and not (metric == "cosine" and derived == "ip"
                                                         and _is_normalized_cosine(export_dir)):
        raise RetrieveError(f"--metric {metric} contradicts the towers of --export_dir {export_dir!r} "
                            f"(they need {derived!r}); drop --metric")
    return derived


def _is_normalized_cosine(export_dir: str) -> bool:
    root = Path(export_dir)
    paths = [p for p in (root / "user" / "tower.json", root / "item" / "tower.json", root / "tower.json") if p.is_file()]
    return all(str(json.loads(p.read_text()).get("similarity", "")).upper() == "COSINE" for p in paths)


class GroundTruth:
    """Targets and exclusions of the users that have a ground-truth row.

    Attributes:
        user_rows: (Q,) rows in the user embeddings of the ground-truth rows, file order.
        targets: (Q,) int64 item rows of the targets.
        exclude: ``(rows (M,), offsets (U + 1,))`` item rows to exclude per *user
            embedding row* (targets removed), or None without ``--exclude_column``.
    """

    def __init__(self, user_rows: np.ndarray, targets: np.ndarray, exclude) -> None:
        self.user_rows, self.targets, self.exclude = user_rows, targets, exclude


def read_ground_truth(path: str, user_ids: pa.Array, item_index: ItemIndex, user_column: str,
                      target_column: str, exclude_column: str | None) -> GroundTruth:
    """Reads ``--ground_truth``: one row per user, its target item id, optional excluded ids."""
    table = _read_parquet(path, "--ground_truth")
    names = table.column_names
    for flag, column in (("--user_column", user_column), ("--target_column", target_column),
                         ("--exclude_column", exclude_column)):
        if column is not None and column not in names:
            raise RetrieveError(f"--ground_truth: {path!r} has no column {column!r} ({flag}; columns: {names})")
    users = table.column(user_column).combine_chunks()
    if users.null_count:
        raise RetrieveError(f"--ground_truth: {path!r}: {users.null_count} null user ids in {user_column!r}")
    if len(users) and pc.count_distinct(users).as_py() != len(users):
        raise RetrieveError(f"--ground_truth: {path!r}: user ids in {user_column!r} must be distinct "
                            "(one row per user)")
    try:
        rows = pc.index_in(users.cast(user_ids.type), value_set=user_ids)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise RetrieveError(f"--ground_truth: {user_column!r} ({users.type}) cannot be matched with the user "
                            f"embedding ids ({user_ids.type}): {e}") from e
    if rows.null_count:
        missing = users.filter(rows.is_null())
        raise RetrieveError(f"--ground_truth: {rows.null_count} of {len(users)} users have no embedding in "
                            f"--user_embeddings, e.g. {missing[:5].to_pylist()}")
    user_rows = rows.to_numpy(zero_copy_only=False).astype(np.int64)
    target_ids = table.column(target_column).combine_chunks()
    if target_ids.null_count or not pa.types.is_integer(target_ids.type):
        raise RetrieveError(f"--ground_truth: {path!r}: {target_column!r} must hold non-null integer item ids, "
                            f"got {target_ids.type} with {target_ids.null_count} nulls")
    try:
        targets = item_index.lookup_targets(target_ids.to_numpy(zero_copy_only=False))
    except ValueError as e:
        raise RetrieveError(f"--ground_truth: {target_column!r}: {e}") from e
    exclude = None
    if exclude_column is not None:
        exclude = _exclusion(table.column(exclude_column).combine_chunks(), exclude_column, item_index,
                             targets, user_rows, len(user_ids))
    return GroundTruth(user_rows, targets, exclude)


def _exclusion(column: pa.Array, name: str, item_index: ItemIndex, targets: np.ndarray,
               user_rows: np.ndarray, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Excluded item rows per user embedding row, as :func:`recframe.recipes.evaluate.evaluate_model` builds them."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) \
            or not pa.types.is_integer(column.type.value_type):
        raise RetrieveError(f"--ground_truth: {name!r} must be a list of integer item ids, got {column.type}")
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = column.flatten()  # null lists contribute nothing, slicing handled
    if flat.null_count:
        raise RetrieveError(f"--ground_truth: {name!r} holds {flat.null_count} null item ids")
    values = flat.to_numpy(zero_copy_only=False).astype(np.int64)
    num_queries = len(targets)
    rows, offsets = item_index.lookup_exclude(values, offsets)
    values_t, offsets_t = remove_targets_from_exclusion(
        (torch.from_numpy(rows), torch.from_numpy(offsets)),
        (torch.from_numpy(targets), torch.arange(num_queries + 1)), num_queries)
    values, offsets = values_t.numpy(), offsets_t.numpy()
    # Reorder from ground-truth rows to user embedding rows (users without a row: nothing).
    lens = np.diff(offsets)
    by_user = np.argsort(user_rows, kind="stable")
    starts, lens_u = offsets[by_user], lens[by_user]
    take = np.repeat(starts - np.cumsum(lens_u) + lens_u, lens_u) + np.arange(lens_u.sum())
    counts = np.zeros(num_users, dtype=np.int64)
    counts[user_rows] = lens
    return values[take].astype(np.int64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------


def topk_table(user_ids: pa.Array, user_column: str, item_ids: pa.Array, scores: np.ndarray,
               rows: np.ndarray) -> pa.Table:
    """Output table: user id, ``item_ids`` (best first) and ``scores`` list<float32>; empty ranks dropped."""
    valid = rows >= 0
    offsets = pa.array(np.concatenate([[0], np.cumsum(valid.sum(1))]).astype(np.int32))
    ids = item_ids.take(pa.array(rows[valid]))
    return pa.table({
        user_column: user_ids,
        "item_ids": pa.ListArray.from_arrays(offsets, ids),
        "scores": pa.ListArray.from_arrays(offsets, pa.array(scores[valid].astype(np.float32))),
    })


def default_metrics_path(output: str) -> str:
    """``topk.parquet`` -> ``topk_metrics.json`` (next to the output)."""
    return os.path.splitext(output)[0] + "_metrics.json"


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


@dataclass
class RetrieveOptions:
    """What :func:`retrieve` does; the fields are the flags of ``recframe retrieve``."""

    item_embeddings: str
    user_embeddings: str
    output: str
    top_k: int = 10
    item_id_column: str | None = None
    user_id_column: str | None = None
    metric: str | None = None
    export_dir: str | None = None
    index: str = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    index_path: str | None = None
    ground_truth: str | None = None
    user_column: str | None = None
    target_column: str | None = None
    exclude_column: str | None = None
    metrics_top_k: list[int] | None = None
    metrics_output: str | None = None
    chunk_size: int = 1024
    item_chunk_size: int = 65536
    device: str | None = None


def _check_args(args: RetrieveOptions) -> list[int]:
    """Validates numeric arguments; returns the metric cut-offs."""
    for flag in ("top_k", "nprobe", "hnsw_m", "ef_construction", "ef_search", "chunk_size", "item_chunk_size"):
        if getattr(args, flag) < 1:
            raise RetrieveError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.nlist is not None and args.nlist < 1:
        raise RetrieveError(f"--nlist must be >= 1, got {args.nlist}")
    ks = sorted(set(args.metrics_top_k or [args.top_k]))
    if ks[0] < 1 or ks[-1] > args.top_k:
        raise RetrieveError(f"--metrics_top_k must be in [1, --top_k={args.top_k}], got {ks}")
    if args.ground_truth is None:
        for flag in ("target_column", "exclude_column", "user_column"):
            if getattr(args, flag) is not None:
                raise RetrieveError(f"--{flag} needs --ground_truth")
    elif args.target_column is None:
        raise RetrieveError("--ground_truth needs --target_column (the target item id column)")
    return ks


def retrieve(args: RetrieveOptions) -> dict:
    """Top-K per user (written to ``args.output``), with metrics against a ground truth when
    given; prints the metrics table and returns the metrics record (also written as JSON)."""
    ks = _check_args(args)
    check_output_path(args.output, "--output")
    check_output_path(args.metrics_output or default_metrics_path(args.output), "--metrics_output")
    device = resolve_device(args.device or "cpu")
    if args.index != "flat" or args.index_path:
        import_faiss()  # fail before reading anything
    metric = resolve_metric(args.metric, args.export_dir)
    item_ids, item_emb, _ = read_embeddings(args.item_embeddings, args.item_id_column, "--item_embeddings")
    # Users: one query per row; ids must be distinct only to be matched with --ground_truth.
    user_ids, user_emb, user_column = read_embeddings(args.user_embeddings, args.user_id_column,
                                                      "--user_embeddings", unique=args.ground_truth is not None)
    if item_emb.shape[1] != user_emb.shape[1]:
        raise RetrieveError(f"embedding sizes differ: --item_embeddings has {item_emb.shape[1]}, "
                            f"--user_embeddings has {user_emb.shape[1]}")
    if len(item_ids) == 0:
        raise RetrieveError(f"--item_embeddings: {args.item_embeddings!r} has no rows")
    if metric == "cosine":
        item_emb, user_emb = normalize_rows(item_emb), normalize_rows(user_emb)

    truth = None
    if args.ground_truth is not None:
        if not pa.types.is_integer(item_ids.type):
            raise RetrieveError(f"--ground_truth needs integer item ids; --item_embeddings ids are {item_ids.type}")
        truth = read_ground_truth(args.ground_truth, user_ids, ItemIndex(item_ids.to_numpy(zero_copy_only=False)),
                                  args.user_column or user_column, args.target_column, args.exclude_column)
    exclude = truth.exclude if truth is not None else None

    timings = {}
    index = None
    if args.index != "flat" or args.index_path:
        t0 = time.perf_counter()
        try:
            index = build_index(item_emb, args.index, args.nlist, args.hnsw_m, args.ef_construction)
        except ValueError as e:
            raise RetrieveError(str(e)) from e
        timings["build_s"] = time.perf_counter() - t0

    def exact_search() -> tuple[np.ndarray, np.ndarray]:
        ex_t = None if exclude is None else tuple(torch.from_numpy(a) for a in exclude)
        s, r = exact_top_k(torch.from_numpy(user_emb).to(device), torch.from_numpy(item_emb).to(device), args.top_k,
                           ex_t, args.chunk_size, args.item_chunk_size)
        return s.cpu().numpy(), r.cpu().numpy()

    t0 = time.perf_counter()
    exact = None
    if args.index == "flat":
        scores, rows = exact_search()
    else:
        scores, rows = search_index(index, user_emb, args.top_k, exclude, args.nprobe, args.ef_search, args.chunk_size)
    timings["search_s"] = time.perf_counter() - t0

    record: dict = {}
    if truth is not None:
        metrics = RetrievalMetrics(ks)
        metrics.update(torch.from_numpy(rows[truth.user_rows]), torch.from_numpy(truth.targets))
        record.update(metrics.compute())
        record["num_queries"] = int(metrics.count)
    if args.index != "flat":
        _, exact = exact_search()
        for k in ks:
            record[f"index_recall@{k}"] = index_recall(rows[:, :k], exact[:, :k])
    else:
        for k in ks:
            record[f"index_recall@{k}"] = 1.0

    atomic_write(args.output, lambda f: pq.write_table(topk_table(user_ids, user_column, item_ids, scores, rows), f))
    if args.index_path:
        data = serialize_index(index)
        atomic_write(args.index_path, lambda f: f.write(data))

    info = {"index": args.index, "metric": metric, "top_k": args.top_k, "num_users": len(user_ids),
            "num_items": len(item_ids), **timings}
    if args.index == "ivf":
        info.update(nlist=int(index.nlist), nprobe=min(args.nprobe, int(index.nlist)))
    elif args.index == "hnsw":
        info.update(hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search)
    title = (f"{args.index} index ({metric}), {len(user_ids)} users x {len(item_ids)} items"
             + (f", ground truth {args.ground_truth}" if truth is not None else ""))
    print(format_metrics_table(record, title=title))
    metrics_path = args.metrics_output or default_metrics_path(args.output)
    full = {"output": args.output, "ground_truth": args.ground_truth, **info, **record}
    atomic_write(metrics_path, lambda f: f.write(json.dumps(full, indent=2).encode()))
    print(f"wrote {args.output} and {metrics_path}" + (f" and {args.index_path}" if args.index_path else ""))
    return full
