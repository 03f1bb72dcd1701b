"""Candidates: each training row's user against the items it is contrasted with.

The item rows of a :class:`~recframe.batch.Batch` are the B positives, then ``num_shared``
sampled negatives shared by every row, then the per-row negatives (``row_negative_row``).
:func:`assemble_candidates` lays them out as the columns of one (B, C) score matrix:

1. in-batch: every row's positive, row i's own positive at column i (with
   ``in_batch_negative``); under global in-batch negatives every rank's positives in rank
   order, row i's own at column ``offset + i``; without in-batch negatives only the row's own
   positive (column 0);
2. the S shared sampled negatives;
3. the row's own per-row negatives, padded to the row with the most.

Each score is similarity / temperature; ``log_q`` (when the batch carries item
probabilities) is the logQ correction of each candidate. A candidate is *masked* out of its
row when it is an accidental hit (it holds the row's positive item, outside the positive
column), an item of the row's ``batch.excluded_negatives`` (never the positive column), a
sampler fallback slot, or padding. Losses and training metrics consume a
:class:`ScoredBatch`, which builds the candidates once, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from recframe.batch import Batch, SparseIds
from recframe.negatives.exclusion import excluded_row_candidates, excluded_shared_candidates

# Logit given to masked candidates: exp() underflows to exactly 0 in float32 and bf16,
# and it stays finite so a masked entry never turns the loss into inf or nan.
MASKED_LOGIT = -1e9


def masked_logit(dtype: torch.dtype) -> float:
    """The masked candidates' logit in ``dtype``: MASKED_LOGIT, or half of float16's lowest
    value (-32752) in float16, where -1e9 does not exist; both finite, below any real logit."""
    return max(MASKED_LOGIT, torch.finfo(dtype).min / 2)


@dataclass
class GlobalInBatch:
    """The positives of the whole global batch (every rank's rows ``[0, B_r)``, rank order).

    ``emb`` (G, D) item embeddings with gradients, ``offset`` the rows of the lower ranks,
    ``key`` (G,) item keys and ``log_q`` (G,) log q, or None when the batch has none.
    """

    emb: torch.Tensor
    offset: int
    key: torch.Tensor | None
    log_q: torch.Tensor | None


@dataclass
class Candidates:
    """Scores of each row's user against its candidate items.

    Attributes:
        scores: (B, C) similarity / temperature, no logQ, nothing masked.
        log_q: (B, C) log q of each candidate, or None when the batch carries none.
        masked: (B, C) bool, True where the column is not a candidate of the row.
        positive_column: (B,) int64 column of each row's positive.
        logq_correction: whether :meth:`logits` subtracts ``log_q`` by default.
    """

    scores: torch.Tensor
    log_q: torch.Tensor | None
    masked: torch.Tensor
    positive_column: torch.Tensor
    logq_correction: bool

    def logits(self, logq_correction: bool | None = None) -> torch.Tensor:
        """(B, C) scores [- log q], masked entries set to ``masked_logit(dtype)``.

        ``logq_correction`` defaults to the model's setting; the correction needs
        ``log_q`` (batches parsed with logq).
        """
        apply = self.logq_correction if logq_correction is None else logq_correction
        logits = self.scores
        if apply and self.log_q is not None:
            logits = logits - self.log_q.to(logits.dtype)
        return logits.masked_fill(self.masked, masked_logit(logits.dtype))

    def binary_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B * C,) logits (no logQ), labels and validity of every (row, candidate) pair:
        label 1 at each row's positive column, 0 at its negatives; masked pairs are invalid.
        (Not filtered here: a boolean index would read the mask back from the device.)"""
        labels = torch.zeros_like(self.scores)
        labels.scatter_(1, self.positive_column.unsqueeze(1), 1.0)
        return self.scores.reshape(-1), labels.reshape(-1), ~self.masked.reshape(-1)


def _per_row_negatives(batch: Batch, first_row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) item-row index of each row's per-row negatives (padded) and their validity."""
    owner = batch.row_negative_row
    counts = torch.bincount(owner, minlength=batch.batch_size)
    width = batch.row_negative_width or int(counts.max())  # known on the host when parsed
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(owner.numel(), device=owner.device) - starts[owner]
    index = torch.zeros(batch.batch_size, width, dtype=torch.long, device=owner.device)
    valid = torch.zeros(batch.batch_size, width, dtype=torch.bool, device=owner.device)
    index[owner, slot] = first_row + torch.arange(owner.numel(), device=owner.device)
    valid[owner, slot] = batch.row_negative_valid
    return index, valid


def _excluded(cand_keys: list[torch.Tensor], shared_keys: list[torch.Tensor | None],
              exclude: SparseIds) -> torch.Tensor:
    """(B, C) bool, True where a candidate's key is in its row's excluded set; the shared
    column blocks are looked up together (one search per excluded key)."""
    num_rows = cand_keys[0].shape[0]
    shared = [k for k in shared_keys if k is not None]
    if len(shared) == len(shared_keys):  # the common case: no per-row candidates
        return excluded_shared_candidates(torch.cat(shared), exclude, num_rows)
    shared_mask = (excluded_shared_candidates(torch.cat(shared), exclude, num_rows).split(
        [k.numel() for k in shared], dim=1) if shared else [])
    blocks, next_shared = [], iter(shared_mask)
    for block_keys, shared_block in zip(cand_keys, shared_keys):
        blocks.append(next(next_shared) if shared_block is not None
                      else excluded_row_candidates(block_keys, exclude))
    return torch.cat(blocks, dim=1)


def has_sampled_negatives(batch: Batch) -> bool:
    """Whether the batch carries a negative sampler's items (shared or per-row)."""
    return batch.num_shared > 0 or (batch.row_negative_row is not None and batch.row_negative_row.numel() > 0)


def assemble_candidates(user: torch.Tensor, items: torch.Tensor, batch: Batch, *, temperature: float,
                        in_batch_negative: bool, logq_correction: bool,
                        global_in_batch: GlobalInBatch | None = None) -> Candidates:
    """The :class:`Candidates` of a batch (see the module docstring for the columns).

    Args:
        user: (B, D) user embeddings; items: (N, D) embeddings of the batch's item rows.
        batch: the parsed batch (item keys, log q, sampled rows, exclusions).
        global_in_batch: the gathered global batch's positives (replaces the local in-batch
            columns), or None.
    """
    num_rows, num_shared = batch.batch_size, batch.num_shared
    keys, log_q = batch.item_key, batch.item_log_q
    sims, cand_keys, shared_keys, cand_log_q, cand_valid = [], [], [], [], []

    def add_shared(rows: slice) -> None:
        sims.append(user @ items[rows].T)
        if keys is not None:
            cand_keys.append(keys[rows].unsqueeze(0).expand(num_rows, -1))
            shared_keys.append(keys[rows])
        if log_q is not None:
            cand_log_q.append(log_q[rows].unsqueeze(0).expand(num_rows, -1))
        cand_valid.append(torch.ones(num_rows, rows.stop - rows.start, dtype=torch.bool, device=user.device))

    def add_per_row(index: torch.Tensor, valid: torch.Tensor) -> None:
        sims.append((user.unsqueeze(1) * items[index]).sum(-1))
        if keys is not None:
            cand_keys.append(keys[index])
            shared_keys.append(None)
        if log_q is not None:
            cand_log_q.append(log_q[index])
        cand_valid.append(valid)

    offset = 0
    if in_batch_negative and global_in_batch is not None:
        offset = global_in_batch.offset
        sims.append(user @ global_in_batch.emb.to(user.dtype).T)
        if keys is not None:
            cand_keys.append(global_in_batch.key.unsqueeze(0).expand(num_rows, -1))
            shared_keys.append(global_in_batch.key)
        if log_q is not None:
            cand_log_q.append(global_in_batch.log_q.unsqueeze(0).expand(num_rows, -1))
        cand_valid.append(torch.ones(num_rows, global_in_batch.emb.shape[0], dtype=torch.bool, device=user.device))
    elif in_batch_negative:
        add_shared(slice(0, num_rows))
    else:
        own = torch.arange(num_rows, device=user.device).unsqueeze(1)
        add_per_row(own, torch.ones_like(own, dtype=torch.bool))
    if num_shared:
        add_shared(slice(num_rows, num_rows + num_shared))
    if batch.row_negative_row is not None and batch.row_negative_row.numel():
        add_per_row(*_per_row_negatives(batch, num_rows + num_shared))

    scores = torch.cat(sims, dim=1) / temperature
    if in_batch_negative:
        positive = torch.arange(offset, offset + num_rows, device=user.device)
    else:
        positive = torch.zeros(num_rows, dtype=torch.long, device=user.device)
    columns = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0)
    masked = ~torch.cat(cand_valid, dim=1)
    if keys is not None:
        hits = torch.cat(cand_keys, dim=1) == keys[:num_rows].unsqueeze(1)
        if batch.excluded_negatives is not None:
            hits |= _excluded(cand_keys, shared_keys, batch.excluded_negatives)
        masked |= hits & (columns != positive.unsqueeze(1))
    return Candidates(scores, torch.cat(cand_log_q, dim=1) if log_q is not None else None, masked, positive,
                      logq_correction)


class ScoredBatch:
    """A batch and the model's embeddings of it, as losses and training metrics consume them.

    Args:
        user_emb: (B, D) user embeddings; item_emb: (N, D) embeddings of the item rows.
        batch: the parsed batch.
        temperature: logits are similarity / temperature.
        in_batch_negative, logq_correction: the model's settings.
        label_field: the label column read by pointwise losses and metrics (or None).
        global_in_batch: gathered global in-batch candidates, or None.
    """

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor, batch: Batch, *, temperature: float,
                 in_batch_negative: bool, logq_correction: bool, label_field: str | None = None,
                 global_in_batch: GlobalInBatch | None = None) -> None:
        self.user_emb, self.item_emb, self.batch = user_emb, item_emb, batch
        self.temperature = temperature
        self.in_batch_negative = in_batch_negative
        self.logq_correction = logq_correction
        self.label_field = label_field
        self.global_in_batch = global_in_batch

    @cached_property
    def candidates(self) -> Candidates:
        """The listwise candidates (built once)."""
        return assemble_candidates(self.user_emb, self.item_emb, self.batch, temperature=self.temperature,
                                   in_batch_negative=self.in_batch_negative, logq_correction=self.logq_correction,
                                   global_in_batch=self.global_in_batch)

    @property
    def has_sampled_negatives(self) -> bool:
        return has_sampled_negatives(self.batch)

    @property
    def sample_weight(self) -> torch.Tensor | None:
        return self.batch.sample_weight

    def pointwise_logits(self) -> torch.Tensor:
        """(B,) similarity / temperature of each row's own user and item."""
        user = self.user_emb
        return (user * self.item_emb[: user.shape[0]]).sum(dim=-1) / self.temperature

    def labels(self) -> torch.Tensor:
        """(B,) the label column."""
        if self.label_field is None:
            raise ValueError("no label column: data_config.label_fields is empty")
        return self.batch.labels[self.label_field]

    def binary_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits, labels, valid or None) of the binary task: with sampled negatives every
        (row, candidate) pair and whether it is unmasked (no logQ; the label column is not
        read), else each row's own pair against the label column (all valid: None)."""
        if self.has_sampled_negatives:
            return self.candidates.binary_pairs()
        return self.pointwise_logits(), self.labels(), None


__all__ = ["Candidates", "GlobalInBatch", "MASKED_LOGIT", "ScoredBatch", "assemble_candidates",
           "has_sampled_negatives"]
