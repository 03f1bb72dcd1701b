"""Full-corpus evaluation: embed every catalogue item once, rank them for every user.

For each evaluation row (a user query with its target item), all items of
``item_input_path`` are scored by the model's similarity; the exact top max(K) are taken
(chunked matrix product), excluding the row's ``eval_config.exclude_items_field`` items
(the target itself is never excluded). Reports HitRate@K, Recall@K, NDCG@K and MRR, and
the same without exclusion under ``raw_`` keys when ``report_raw`` is set. On request it
also keeps each query's outcome (:class:`QueryRanks`: the target and its rank), for per-user
analysis and paired comparisons of two models on the same queries.

Under torchrun each rank embeds its shard of the catalogue (the reader's contiguous row
ranges, in file order) and the shards are all-gathered, so every rank holds the embeddings of
the whole catalogue in file order, exactly as one process would; each rank then scores its
shard of the evaluation rows, and the metric sums and counts are all-reduced, so every rank
returns the metrics of the whole evaluation data.
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
from recframe.config.names import resolve_top_k
from recframe.errors import RecframeError
from recframe.files import atomic_write
from recframe.metrics.item_index import ItemIndex
from recframe.metrics.retrieval import RetrievalMetrics, exact_top_k, remove_targets_from_exclusion
from recframe.models import MatchModel
from recframe.pipeline import Pipeline, resolve_device
from recframe.training.checkpoint import load_checkpoint


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


@torch.no_grad()
def embed_items(model: MatchModel, pipeline: Pipeline, device: torch.device) -> tuple[np.ndarray, torch.Tensor]:
    """Item keys (N,) int64 and embeddings (N, D) of every row of the item table.

    Under torchrun each rank embeds its contiguous shard and the shards are all-gathered in
    rank order, which is the file order.
    """
    rank, world_size = distributed.rank(), distributed.world_size()
    keys = [np.zeros(0, dtype=np.int64)]
    embeddings = [torch.zeros(0, model.item_tower.output_dim, device=device)]
    for batch in pipeline.eval_loader(pipeline.config.item_input_path, pipeline.item_parser(),
                                      rank=rank, world_size=world_size):
        keys.append(batch.item_key.numpy())
        embeddings.append(model.item_embedding(batch.to(device)))
    item_keys, item_emb = np.concatenate(keys), torch.cat(embeddings)
    if world_size > 1:
        sizes = distributed.gather_sizes(len(item_keys), device)
        item_emb = distributed.all_gather_rows(item_emb.contiguous(), sizes)
        item_keys = distributed.all_gather_rows(torch.from_numpy(item_keys).to(device), sizes).cpu().numpy()
    return item_keys, item_emb


@torch.no_grad()
def evaluate_model(model: MatchModel, pipeline: Pipeline, device: torch.device, eval_path: str | None = None,
                   query_ranks: QueryRanks | None = None) -> dict[str, float]:
    """Full-corpus metrics of ``model`` on ``eval_path`` (default: eval_input_path).

    With ``query_ranks`` (one process only), each query's target key and rank are appended
    to it.
    """
    if query_ranks is not None and distributed.world_size() > 1:
        raise ValueError("per-query ranks are kept by a single process; run the evaluation without torchrun")
    was_training = model.training
    model.eval()
    eval_config = pipeline.config.eval_config
    top_k = resolve_top_k(eval_config)
    item_keys, item_emb = embed_items(model, pipeline, device)
    index = ItemIndex(item_keys)
    metrics = RetrievalMetrics(top_k)
    raw_metrics = RetrievalMetrics(top_k) if eval_config.report_raw and eval_config.exclude_items_field else None
    parser = pipeline.eval_user_parser()
    # Under torchrun every rank holds the whole (gathered) catalogue, so the ranking is that of
    # one process, and ranks its own share of the users; the sums are all-reduced.
    rank, world_size = distributed.rank(), distributed.world_size()
    for batch in pipeline.eval_loader(eval_path or pipeline.config.eval_input_path, parser,
                                      rank=rank, world_size=world_size):
        targets = torch.from_numpy(index.lookup_targets(batch.item_key.numpy()))
        user_emb = model.user_embedding(batch.to(device))
        exclude = None
        if eval_config.exclude_items_field:
            rows, offsets = index.lookup_exclude(*batch.extra[eval_config.exclude_items_field])
            exclude = remove_targets_from_exclusion((torch.from_numpy(rows), torch.from_numpy(offsets)),
                                                    (targets, torch.arange(len(targets) + 1)), len(targets))
            exclude = tuple(t.to(device) for t in exclude)
        _, top = exact_top_k(user_emb, item_emb, max(top_k), exclude, eval_config.user_chunk_size)
        metrics.update(top.cpu(), targets)
        if query_ranks is not None:
            query_ranks.item_keys.append(batch.item_key.numpy().astype(np.int64))
            query_ranks.ranks.append(target_ranks(top.cpu(), targets).numpy())
        if raw_metrics is not None:
            _, raw_top = exact_top_k(user_emb, item_emb, max(top_k), None, eval_config.user_chunk_size)
            raw_metrics.update(raw_top.cpu(), targets)
    for m in (metrics, raw_metrics):
        if m is not None and world_size > 1:
            distributed.all_reduce_sum_(m.sums)
            distributed.all_reduce_sum_(m.count)
    results = metrics.compute()
    if raw_metrics is not None:
        results.update({f"raw_{k}": v for k, v in raw_metrics.compute().items()})
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
    device = resolve_device(device_name or config.train_config.device)
    device = distributed.setup(device, config.train_config.process_group_timeout_seconds)
    state = load_checkpoint(checkpoint, map_location=device)
    if distributed.is_main():
        pipeline.prepare_data()
    distributed.barrier()
    if eval_path:
        config.eval_input_path = eval_path  # so that a missing file is reported as eval_input_path
    pipeline.check_input_paths(("eval_input_path", "item_input_path"))
    model = pipeline.build_model().to(device)
    model.load_state_dict(state["model"])
    return evaluate_model(model, pipeline, device, config.eval_input_path, query_ranks), int(state["step"])


def evaluate_and_write(pipeline: Pipeline, checkpoint: str, *, eval_path: str | None = None,
                       device_name: str | None = None, output: str | None = None,
                       per_query_output: str | None = None) -> dict | None:
    """:func:`evaluate_checkpoint`, then (rank 0) write the metrics as JSON to ``output``
    (default ``MODEL_DIR/eval_result_<split>.json``) and, with ``per_query_output``, each
    query's target and rank as Parquet (one process only). Returns the written record with
    ``"output"`` and ``"per_query_output"`` added, or None on ranks other than 0."""
    if per_query_output and distributed.env_world_size() > 1:
        raise RecframeError("--per_query_output: per-query ranks are written by one process; run recframe.evaluate "
                            "without torchrun")
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
