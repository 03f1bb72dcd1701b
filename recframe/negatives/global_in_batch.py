"""Global in-batch negatives under torchrun: every rank's positives are every row's candidates.

With ``train_config.global_in_batch_negative`` each rank contrasts its users against the
positives of the whole global batch: the item embeddings of the rows ``[0, B_r)`` of every
rank are all-gathered with gradients (:func:`recframe.distributed.all_gather_with_grad`), and
their item keys and log q without. Shared sampled negatives and per-row negatives stay local.
"""

from __future__ import annotations

import torch

from recframe import distributed
from recframe.batch import Batch
from recframe.negatives.candidates import GlobalInBatch


def gather_global_in_batch(item_emb: torch.Tensor, batch: Batch) -> GlobalInBatch | None:
    """The global batch's positives in rank order (None when not distributed).

    Row ``i`` of this rank's batch has its positive at ``offset + i``, ``offset`` being the
    rows of the lower ranks.
    """
    if not distributed.is_distributed():
        return None
    num_rows = batch.batch_size
    items = item_emb[:num_rows]
    sizes = distributed.gather_sizes(num_rows, items.device)
    key = log_q = None
    if batch.item_key is not None:
        key = distributed.all_gather_rows(batch.item_key[:num_rows].contiguous(), sizes)
    if batch.item_log_q is not None:
        log_q = distributed.all_gather_rows(batch.item_log_q[:num_rows].float().contiguous(), sizes)
    # float32 on the wire: under autocast the embeddings may be bf16 / fp16.
    return GlobalInBatch(distributed.all_gather_with_grad(items.float(), sizes), sum(sizes[: distributed.rank()]),
                         key, log_q)


__all__ = ["gather_global_in_batch"]
