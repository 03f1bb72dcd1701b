"""Full-corpus evaluation: embed every catalogue item once, rank them for every user.

For each evaluation row (a user query with its target item), all items of
``item_input_path`` are scored by the model's similarity; the exact top max(K) are taken
(chunked matrix product), excluding the row's ``eval_config.exclude_items_field`` items
(the target itself is never excluded). Reports HitRate@K, Recall@K, NDCG@K and MRR, and
the same without exclusion under ``raw_`` keys when ``report_raw`` is set. On request it
also keeps each query's outcome (:class:`QueryRanks`: the target and its rank), for per-user
analysis and paired comparisons of two models on the same queries.

Memory is bounded by chunks, never by the catalogue: users are scored ``user_chunk_size`` at a
time against ``item_chunk_size`` items at a time, each item chunk's top list merged into the
running top K (:func:`~recframe.metrics.retrieval.exact_top_k`).

Under torchrun each rank embeds its shard of the catalogue (the reader's contiguous row
ranges, in file order) and keeps it: only the item keys (8 bytes per item) are all-gathered, to
map ids to rows. Each rank embeds its share of the evaluation rows; the user embeddings are
all-gathered (every rank scores every user against its items), and the ranks' top lists are
all-gathered and merged (:func:`~recframe.metrics.retrieval.merge_top_k`), which is exactly
the ranking of one process over the whole catalogue. Every rank returns the metrics of the
whole evaluation data.

With ``eval_config.approximate`` each rank searches a faiss index of its shard instead; the
index's recall against the exact search is measured on a sample of the users.

With ``eval_config.pointwise_metrics`` (a binary_cross_entropy model with a label column) each
evaluation row is also scored as a (user, item) pair in the same pass: the item tower embeds
the row's own item features and the logit is what the loss reads (similarity / temperature,
:meth:`~recframe.negatives.candidates.ScoredBatch.pointwise_logits`); the ranks' logits and
labels are all-gathered (rank order = file order) and ``auc`` / ``accuracy``
(:class:`~recframe.metrics.pointwise.PointwiseMetrics`) computed over all of them on every rank.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recframe import distributed
from recframe.batch import jagged_row_ids
from recframe.config.names import resolve_top_k
from recframe.files import atomic_write, check_output_path
from recframe.data.inputs import DataError
from recframe.metrics.item_index import ItemIndex
from recframe.metrics.pointwise import PointwiseMetrics
from recframe.metrics.retrieval import RetrievalMetrics, exact_top_k, merge_top_k, remove_targets_from_exclusion
from recframe.models import MatchModel
from recframe.negatives.candidates import ScoredBatch
from recframe.device import resolve_device
from recframe.pipeline import Pipeline
from recframe.data.preflight import check_inputs
from recframe.training.checkpoint import load_checkpoint, load_model_state


def target_ranks(top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's target in its returned list, 0 when it is not there.

    Args:
        top: (Q, L) returned item indices per query, best first; targets: (Q,) item indices.
    Returns:
        (Q,) int64.
    """
    hit = top == targets.unsqueeze(1)
    return torch.where(hit.any(dim=1), hit.to(torch.int64).argmax(dim=1) + 1, 0)


@dataclass
class QueryRanks:
    """Per-query outcomes of an evaluation, in the order of the evaluation data.

    ``item_keys``: each query's target item key (the id itself for integer ids, its 64-bit
    hash for string ids, see ``features.hashing.item_keys``); ``ranks``: the target's 1-based
    rank among the ranked items (after exclusion), 0 when it is beyond the largest K.
    HitRate@K of the evaluation is the mean of ``1 <= rank <= K``.
    """

    item_keys: list[np.ndarray] = field(default_factory=list)
    ranks: list[np.ndarray] = field(default_factory=list)

    def table(self) -> pa.Table:
        """Columns ``row`` (0-based position in the evaluation data), ``item_key``, ``rank``."""
        item_keys = np.concatenate(self.item_keys) if self.item_keys else np.zeros(0, np.int64)
        ranks = np.concatenate(self.ranks) if self.ranks else np.zeros(0, np.int64)
        return pa.table({"row": np.arange(len(ranks), dtype=np.int64), "item_key": item_keys,
                         "rank": ranks.astype(np.int32)})


@dataclass
class ItemShard:
    """This rank's contiguous shard of the catalogue.

    ``keys`` (N,) int64: the keys of the *whole* catalogue, in file order (ids -> rows);
    ``emb`` (n, D): the embeddings of this rank's rows ``[offset, offset + n)``.
    """

    keys: np.ndarray
    emb: torch.Tensor
    offset: int


@dataclass
class Queries:
    """The evaluation rows of every rank, in file order: ``emb`` (U, D) user embeddings,
    ``targets`` (U,) int64 item rows, ``exclude`` jagged item rows to exclude (targets
    removed; None without exclusion), ``item_keys`` (U,) each row's target key; with
    pointwise metrics ``logits`` (U,) float32 each row's own (user, item) logit and ``labels``
    (U,) its label (None without)."""

    emb: torch.Tensor
    targets: torch.Tensor
    exclude: tuple[torch.Tensor, torch.Tensor] | None
    item_keys: np.ndarray
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@torch.no_grad()
def embed_item_shard(model: MatchModel, pipeline: Pipeline, device: torch.device) -> ItemShard:
    """Embed this rank's shard of the item table; all-gather only the item keys."""
    rank, world_size = distributed.rank(), distributed.world_size()
    keys = [np.zeros(0, dtype=np.int64)]
    embeddings = [torch.zeros(0, model.item_tower.output_dim, device=device)]
    for batch in pipeline.eval_loader(pipeline.config.item_input_path, pipeline.item_parser(), device=device,
                                      rank=rank, world_size=world_size):
        keys.append(batch.item_key.numpy())
        embeddings.append(model.item_embedding(batch.to(device, non_blocking=True)))
    local_keys = np.concatenate(keys)
    sizes = distributed.gather_sizes(len(local_keys), device)
    all_keys = distributed.all_gather_rows(torch.from_numpy(local_keys).to(device), sizes).cpu().numpy()
    return ItemShard(all_keys, torch.cat(embeddings), sum(sizes[:rank]))


def _gather_jagged(values: torch.Tensor, offsets: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's jagged rows, concatenated in rank order."""
    lengths = distributed.all_gather_rows((offsets[1:] - offsets[:-1]).to(device),
                                          distributed.gather_sizes(len(offsets) - 1, device))
    values = distributed.all_gather_rows(values.to(device), distributed.gather_sizes(len(values), device))
    return values.cpu(), torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)]).cpu()


@torch.no_grad()
def embed_queries(model: MatchModel, pipeline: Pipeline, device: torch.device, eval_path: str,
                  index: ItemIndex) -> Queries:
    """Embed this rank's evaluation rows and all-gather every rank's (rank order = file order);
    with pointwise metrics also score each row's own (user, item) pair."""
    exclude_field = pipeline.config.eval_config.exclude_items_field
    label = pipeline.pointwise_label()
    rank, world_size = distributed.rank(), distributed.world_size()
    emb = [torch.zeros(0, model.user_tower.output_dim, device=device)]
    logits = [torch.zeros(0, device=device)]
    labels = [torch.zeros(0, device=device)]
    keys, targets, ex_values, ex_lengths = [np.zeros(0, np.int64)], [], [], []
    for batch in pipeline.eval_loader(eval_path, pipeline.eval_user_parser(), rank=rank, world_size=world_size,
                                      device=device):
        batch_targets = torch.from_numpy(index.lookup_targets(batch.item_key.numpy()))
        on_device = batch.to(device, non_blocking=True)
        if label is None:
            emb.append(model.user_embedding(on_device))
        else:  # the training forward: both towers over the row's own features, the loss's logit
            outputs = model(on_device)
            scored = ScoredBatch(outputs["user_emb"], outputs["item_emb"], on_device, temperature=model.temperature,
                                 in_batch_negative=False, logq_correction=False, label_field=label)
            emb.append(outputs["user_emb"])
            logits.append(scored.pointwise_logits().float())
            labels.append(scored.labels().float())
        keys.append(batch.item_key.numpy().astype(np.int64))
        targets.append(batch_targets)
        if exclude_field:
            rows, offsets = index.lookup_exclude(*batch.extra[exclude_field])
            values, offsets = remove_targets_from_exclusion(
                (torch.from_numpy(rows), torch.from_numpy(offsets)),
                (batch_targets, torch.arange(len(batch_targets) + 1)), len(batch_targets))
            ex_values.append(values)
            ex_lengths.append(offsets[1:] - offsets[:-1])
    local = len(np.concatenate(keys))
    sizes = distributed.gather_sizes(local, device)
    targets_t = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.int64)
    exclude = None
    if exclude_field:
        lengths = torch.cat(ex_lengths) if ex_lengths else torch.zeros(0, dtype=torch.int64)
        values = torch.cat(ex_values) if ex_values else torch.zeros(0, dtype=torch.int64)
        exclude = _gather_jagged(values, torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)]), device)
    pointwise = {}
    if label is not None:
        pointwise = {name: distributed.all_gather_rows(torch.cat(values).contiguous(), sizes).cpu()
                     for name, values in (("logits", logits), ("labels", labels))}
    return Queries(
        distributed.all_gather_rows(torch.cat(emb).contiguous(), sizes),
        distributed.all_gather_rows(targets_t.to(device), sizes).cpu(),
        exclude,
        distributed.all_gather_rows(torch.from_numpy(np.concatenate(keys)).to(device), sizes).cpu().numpy(),
        **pointwise)


def _slice_jagged(jagged: tuple[torch.Tensor, torch.Tensor] | None, start: int, end: int, lo: int,
                  hi: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows [start, end) of a jagged list, keeping the values in [lo, hi) shifted by -lo."""
    if jagged is None:
        return None
    values, offsets = jagged
    part = values[int(offsets[start]):int(offsets[end])]
    rows = jagged_row_ids(offsets[start:end + 1] - offsets[start])
    keep = (part >= lo) & (part < hi)
    counts = torch.bincount(rows[keep], minlength=end - start)
    return part[keep] - lo, torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


class ShardSearch:
    """Top K of users over this rank's item shard (exact, or a faiss index of the shard),
    merged over the ranks; item indices are global rows."""

    def __init__(self, shard: ItemShard, eval_config) -> None:
        self.shard, self.config = shard, eval_config
        self.approximate = eval_config.approximate if eval_config.HasField("approximate") else None
        self.index = None
        if self.approximate is not None and len(shard.emb):
            from recframe.serving.index import build_index

            a = self.approximate
            self.index = build_index(shard.emb.float().cpu().numpy(), a.index, a.nlist or None, a.hnsw_m,
                                     a.ef_construction)

    def top_k(self, users: torch.Tensor, exclude, start: int, end: int, k: int,
              exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, rows) (end - start, k) of users ``[start, end)`` over every rank's shard."""
        shard, config = self.shard, self.config
        local_exclude = _slice_jagged(exclude, start, end, shard.offset, shard.offset + len(shard.emb))
        if self.index is not None and not exact:
            from recframe.serving.index import search_index

            ex = None if local_exclude is None else tuple(t.numpy() for t in local_exclude)
            scores, rows = search_index(self.index, users.float().cpu().numpy(), k, ex, self.approximate.nprobe,
                                        self.approximate.ef_search, config.user_chunk_size)
            scores, rows = torch.from_numpy(scores), torch.from_numpy(rows)
        else:
            ex = None if local_exclude is None else tuple(t.to(users.device) for t in local_exclude)
            scores, rows = exact_top_k(users, shard.emb, k, ex, config.user_chunk_size, config.item_chunk_size)
            scores, rows = scores.float().cpu(), rows.cpu()
        rows = torch.where(rows >= 0, rows + shard.offset, rows)
        world = distributed.world_size()
        if world == 1:
            return scores, rows
        device = users.device
        sizes = [len(rows)] * world
        all_scores = distributed.all_gather_rows(scores.to(device), sizes).cpu().split(len(rows))
        all_rows = distributed.all_gather_rows(rows.to(device), sizes).cpu().split(len(rows))
        return merge_top_k(all_scores, all_rows, k)


@torch.no_grad()
def evaluate_model(model: MatchModel, pipeline: Pipeline, device: torch.device, eval_path: str | None = None,
                   query_ranks: QueryRanks | None = None) -> dict[str, float]:
    """Full-corpus metrics of ``model`` on ``eval_path`` (default: eval_input_path), and the
    pointwise metrics of eval_config.pointwise_metrics (``auc``, ``accuracy``) when set.

    With ``query_ranks``, each query's target key and rank are appended to it (under torchrun
    every rank ranks every query, in the evaluation data's order).
    """
    was_training = model.training
    model.eval()
    eval_config = pipeline.config.eval_config
    top_k = resolve_top_k(eval_config)
    k = max(top_k)
    shard = embed_item_shard(model, pipeline, device)
    index = ItemIndex(shard.keys)
    queries = embed_queries(model, pipeline, device, eval_path or pipeline.config.eval_input_path, index)
    search = ShardSearch(shard, eval_config)
    metrics = RetrievalMetrics(top_k)
    raw_metrics = RetrievalMetrics(top_k) if eval_config.report_raw and eval_config.exclude_items_field else None
    sample = min(int(eval_config.approximate.recall_sample_users), len(queries.targets)) if search.index else 0
    approximate_rows, exact_rows = [], []
    chunk = eval_config.user_chunk_size
    for start in range(0, len(queries.targets), chunk):
        end = min(start + chunk, len(queries.targets))
        users, targets = queries.emb[start:end], queries.targets[start:end]
        _, top = search.top_k(users, queries.exclude, start, end, k)
        metrics.update(top, targets)
        if query_ranks is not None:
            query_ranks.item_keys.append(queries.item_keys[start:end])
            query_ranks.ranks.append(target_ranks(top, targets).numpy())
        if raw_metrics is not None:
            raw_metrics.update(search.top_k(users, None, start, end, k)[1], targets)
        if start < sample:
            n = min(end, sample) - start
            approximate_rows.append(top[:n].numpy())
            exact_rows.append(search.top_k(users[:n], queries.exclude, start, start + n, k, exact=True)[1].numpy())
    results = metrics.compute()
    if raw_metrics is not None:
        results.update({f"raw_{name}": v for name, v in raw_metrics.compute().items()})
    if approximate_rows:
        from recframe.serving.index import index_recall

        approximate, exact = np.concatenate(approximate_rows), np.concatenate(exact_rows)
        results.update({f"index_recall@{kk}": index_recall(approximate[:, :kk], exact[:, :kk]) for kk in top_k})
    if queries.logits is not None:
        try:
            results.update(PointwiseMetrics(eval_config.pointwise_metrics).compute(
                queries.logits, queries.labels, source=eval_path or pipeline.config.eval_input_path))
        except ValueError as e:
            raise DataError(str(e)) from None
    results["num_queries"] = int(metrics.count)
    results["num_items"] = len(index)
    model.train(was_training)
    return results


def evaluate_checkpoint(pipeline: Pipeline, checkpoint: str, eval_path: str | None = None, device_name: str | None = None,
                        query_ranks: QueryRanks | None = None) -> tuple[dict[str, float], int]:
    """Full-corpus metrics of a checkpoint on ``eval_path`` (default: eval_input_path), the
    tables prepared first when a data source says so; returns (metrics, checkpoint step).
    Under torchrun every rank runs it and gets the metrics of the whole evaluation data."""
    config = pipeline.config
    device = resolve_device(device_name or config.train_config.device,
                            "--device" if device_name else "train_config.device")
    device = distributed.setup(device, config.train_config.process_group_timeout_seconds)
    state = load_checkpoint(checkpoint, map_location=device)
    if distributed.is_main():
        pipeline.prepare_data()
    distributed.barrier()
    if eval_path:
        config.eval_input_path = eval_path  # so that a missing file is reported as eval_input_path
    pipeline.check_input_paths(("eval_input_path", "item_input_path"))
    check_inputs(pipeline, eval_fields=("eval_input_path",))
    model = pipeline.build_model().to(device)
    load_model_state(model, state, checkpoint)
    return evaluate_model(model, pipeline, device, config.eval_input_path, query_ranks), int(state["step"])


def evaluate_and_write(pipeline: Pipeline, checkpoint: str, *, eval_path: str | None = None,
                       device_name: str | None = None, output: str | None = None,
                       per_query_output: str | None = None) -> dict | None:
    """:func:`evaluate_checkpoint`, then (rank 0) write the metrics as JSON to ``output``
    (default ``MODEL_DIR/eval_result_<split>.json``) and, with ``per_query_output``, each
    query's target and rank as Parquet. Returns the written record with
    ``"output"`` and ``"per_query_output"`` added, or None on ranks other than 0."""
    # The outputs are checked first: a bad path must not be found after the whole evaluation.
    eval_split = os.path.splitext(os.path.basename(eval_path or pipeline.config.eval_input_path))[0] or "eval"
    check_output_path(output or os.path.join(pipeline.config.model_dir or ".", f"eval_result_{eval_split}.json"),
                      "--output")
    if per_query_output:
        check_output_path(per_query_output, "--per_query_output")
    query_ranks = QueryRanks() if per_query_output else None
    metrics, step = evaluate_checkpoint(pipeline, checkpoint, eval_path, device_name, query_ranks)
    if not distributed.is_main():  # every rank computed the same metrics; rank 0 reports them
        return None
    eval_path = pipeline.config.eval_input_path
    split = os.path.splitext(os.path.basename(eval_path))[0] or "eval"
    output = output or os.path.join(pipeline.config.model_dir or ".", f"eval_result_{split}.json")
    record = {"checkpoint": str(checkpoint), "step": step, "eval_input_path": eval_path, **metrics}
    atomic_write(output, lambda f: f.write(json.dumps(record, indent=2).encode()))
    if query_ranks is not None:
        os.makedirs(os.path.dirname(os.path.abspath(per_query_output)), exist_ok=True)
        atomic_write(per_query_output, lambda f: pq.write_table(query_ranks.table(), f))
    return {**record, "output": output, "per_query_output": per_query_output}
