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
    Cost: a sort of the C column keys, one binary search per excluded key, a (B, C) table and
    one gather; no (B, C, M) comparison. Every shape is known beforehand (no unique, no
    boolean indexing), so on a GPU nothing waits for the device.
    """
    device = column_keys.device
    if not column_keys.numel() or not exclude.values.numel():
        return torch.zeros(num_rows, column_keys.numel(), dtype=torch.bool, device=device)
    ordered = torch.sort(column_keys).values
    # Each key stands for all its columns at its first sorted position.
    first_of_column = torch.searchsorted(ordered, column_keys)
    values = exclude.values.to(device)
    first = torch.searchsorted(ordered, values).clamp(max=ordered.numel() - 1)
    found = (ordered[first] == values).to(torch.int32)
    rows = jagged_row_ids(exclude.offsets.to(device), total=exclude.values.numel())
    # Counts, not flags: two excluded keys of a row may share a slot, one found and one not.
    table = torch.zeros(num_rows, ordered.numel(), dtype=torch.int32, device=device)
    table.index_put_((rows, first), found, accumulate=True)
    return torch.gather(table, 1, first_of_column.expand(num_rows, -1)) > 0


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
    longest = exclude.longest()
    padded = torch.zeros(num_rows, longest, dtype=torch.long, device=device)
    slots = valid_positions(lengths, longest)
    padded[slots] = exclude.values.to(device)
    return ((row_keys.unsqueeze(2) == padded.unsqueeze(1)) & slots.unsqueeze(1)).any(dim=2)
