"""Which candidates of each row are items the row excludes from its negatives.

A training row may name items that must never be its negatives (data_config.exclude_negatives_field,
e.g. the user's history): pushing them down would contradict the data, since they are items
the user chose. The row's excluded item keys come as jagged :class:`~recframe.batch.SparseIds`
(values (M,) int64 item keys, offsets (B + 1,)); the candidates as item keys either shared by
every row (in-batch and shared sampled negatives: one key per column) or owned by one row
(per-row negatives). Both functions return a (B, n) bool mask, True where the candidate's key
is in that row's excluded set; deciding what to do with it (e.g. sparing the positive column)
is the caller's job.
"""

from __future__ import annotations

import torch

from recframe.batch import SparseIds, jagged_row_ids, valid_positions


def excluded_shared_candidates(column_keys: torch.Tensor, exclude: SparseIds, num_rows: int) -> torch.Tensor:
    """(B, C) bool: row i's excluded set holds the key of column j.

    Args:
        column_keys: (C,) int64 item key of each candidate column, the same for every row.
        exclude: jagged (M,) excluded item keys of the B rows.
        num_rows: B.
    Cost: one binary search per excluded key among the distinct column keys, a (B, distinct
    keys) table, and one gather to (B, C); no (B, C, M) comparison.
    """
    device = column_keys.device
    if not column_keys.numel() or not exclude.values.numel():
        return torch.zeros(num_rows, column_keys.numel(), dtype=torch.bool, device=device)
    distinct, key_of_column = torch.unique(column_keys, return_inverse=True)  # sorted
    values = exclude.values.to(device)
    key = torch.searchsorted(distinct, values).clamp(max=distinct.numel() - 1)
    found = distinct[key] == values
    # uint8, not bool: torch.gather of a bool table is about twice as slow on CPU.
    table = torch.zeros(num_rows, distinct.numel(), dtype=torch.uint8, device=device)
    table[jagged_row_ids(exclude.offsets).to(device)[found], key[found]] = 1
    return torch.gather(table, 1, key_of_column.expand(num_rows, -1)).view(torch.bool)


def excluded_row_candidates(row_keys: torch.Tensor, exclude: SparseIds) -> torch.Tensor:
    """(B, P) bool: row i's excluded set holds the key of its own candidate ``row_keys[i, p]``.

    Args:
        row_keys: (B, P) int64 item keys of each row's own candidates (padding slots may hold
            any key: the caller masks them anyway).
        exclude: jagged (M,) excluded item keys of the B rows.
    """
    num_rows, width = row_keys.shape
    device = row_keys.device
    lengths = exclude.lengths().to(device)
    if not width or not exclude.values.numel():
        return torch.zeros(num_rows, width, dtype=torch.bool, device=device)
    longest = int(lengths.max())
    padded = torch.zeros(num_rows, longest, dtype=torch.long, device=device)
    slots = valid_positions(lengths, longest)
    padded[slots] = exclude.values.to(device)
    return ((row_keys.unsqueeze(2) == padded.unsqueeze(1)) & slots.unsqueeze(1)).any(dim=2)
