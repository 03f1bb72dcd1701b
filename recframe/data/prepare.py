"""An interaction log -> train / valid / test tables with histories, seen items and the catalogue.

    recframe prepare --interactions clicks.csv --user_col uid --item_col sku --time_col ts \\
                     [--users users.parquet] [--items items.parquet] --out data/clicks

What it writes into ``--out`` (Parquet, zstd; ``_manifest.json`` last, naming the column roles
for ``recframe init``): ``train``, ``valid``, ``test``, ``items`` and, with ``--users``, ``users``.
Every row table has the interaction's own columns, the user's side columns (joined from
``--users`` on ``user_col``), the item's side columns (joined from ``--items`` on ``item_col``),
and two history lists: ``hist_<item_col>s`` (the user's earlier items, most recent last, at most
``max_history``) and ``hist_<time_col>s`` (their times, Unix seconds), plus, for each item side
column named in ``history_item_features``, ``hist_<column>``: that column's value for each
history item, aligned with ``hist_<item_col>s`` (a list-valued column, e.g. genres, gives one
string per position, its values joined by ``|``), so a SEQUENCE group can embed each watched
item with its side features. ``seconds_since_last`` is the time from the user's previous
interaction (the last history item) to the row, in seconds, -1 for a row without history:
what a serving system knows as the request time minus the last history time, e.g. whether
the user is still in the same session. Validation and test rows
also carry ``seen_items``: every item the user interacted with before the row (unique, sorted,
untruncated), the items an evaluation leaves out of that user's candidates.

The protocol:

- **Order.** Per user, interactions are stable-sorted by (time, row order in the input): two
  interactions at the same time keep their input order.
- **Times** may be Unix seconds (integers or floats, floored), an Arrow timestamp or date, or
  ISO-8601 text (``2024-03-01``, ``2024-03-01T12:30:00``, with ``Z`` or an offset; text without
  a zone is read as UTC). Histories hold them as Unix seconds.
- **Repeated interactions** (the same user and item more than once) are kept as separate rows
  by default (``repeats="keep"``: a re-purchase is an interaction); ``first`` / ``last`` keeps
  only the earliest / latest of each pair before splitting.
- **leave_last_out** (default): per user, the last interaction is the test row, the one before
  it the validation row, the earlier ones training rows. Users with fewer than
  ``min_interactions`` (at least 3) interactions are cold: all their rows go to train.
- **time**: a global split by time: rows at or after ``test_start`` are test rows, rows at or
  after ``valid_start`` (and before ``test_start``) validation rows, the earlier ones training
  rows; without the two times, they are the times that leave about ``test_fraction`` and
  ``valid_fraction`` of the interactions to test and validation. A user may have several
  evaluation rows, and users first seen after ``valid_start`` (cold users) have evaluation rows
  with an empty or short history. A row's history is every earlier interaction of the user,
  whatever split it fell in: what a deployed model would know at that moment.
- **Catalogue** (``items``): with ``--items``, its rows whose id occurs in the interactions
  (``catalogue="interacted"``, the default) or all of them (``"all"``), in its order; without,
  the interacted items sorted by id, with the ``item_features`` columns of the interactions
  (each item's latest values). Items seen only in validation or test (cold items) are in the
  catalogue and are ranked like any other.

Bad input (a missing file or column, a null id or time, a time that cannot be read, an empty
table, an id missing from a side table, a duplicate id in a side table) raises
:class:`PrepareError` naming the file, the column and the first offending row; the output
folder is built elsewhere and moved into place whole, so nothing half-written is left.
MovieLens preparation (:mod:`recframe.data.sources.movielens`) is one use of
:func:`split_interactions`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from recframe.data.inputs import expand_input_paths
from recframe.errors import RecframeError
from recframe.files import atomic_directory

SPLITS = ("leave_last_out", "time")
REPEATS = ("keep", "first", "last")
CATALOGUES = ("interacted", "all")
MANIFEST_NAME = "_manifest.json"
ROW_GROUP_SIZE = 16384
FORMAT_VERSION = 2  # 2: seconds_since_last


class PrepareError(RecframeError, ValueError):
    """The interaction log or a side table cannot be prepared (the message says where and why)."""


@dataclass
class SplitSpec:
    """How :func:`split_interactions` reads and splits an interaction log (module docstring).

    Times (``valid_start``, ``test_start``) are Unix seconds; ``None`` = from the fractions.
    ``history_col`` / ``history_time_col`` default to ``hist_<item_col>s`` / ``hist_<time_col>s``.
    """

    user_col: str
    item_col: str
    time_col: str
    split: str = "leave_last_out"
    valid_start: float | None = None
    test_start: float | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    max_history: int = 50
    min_interactions: int = 3
    repeats: str = "keep"
    catalogue: str = "interacted"
    item_features: tuple[str, ...] = ()
    history_item_features: tuple[str, ...] = ()
    history_col: str | None = None
    history_time_col: str | None = None
    seen_col: str = "seen_items"
    since_last_col: str = "seconds_since_last"

    def __post_init__(self) -> None:
        self.history_col = self.history_col or f"hist_{self.item_col}s"
        self.history_time_col = self.history_time_col or f"hist_{self.time_col}s"
        self.item_features = tuple(self.item_features)
        self.history_item_features = tuple(self.history_item_features)
        for name, value, allowed in (("split", self.split, SPLITS), ("repeats", self.repeats, REPEATS),
                                     ("catalogue", self.catalogue, CATALOGUES)):
            if value not in allowed:
                raise PrepareError(f"--{name}: got {value!r}, expected one of {', '.join(allowed)}")
        if self.max_history < 1:
            raise PrepareError(f"--max_history: got {self.max_history}, expected >= 1")
        if self.min_interactions < 3:
            raise PrepareError(f"--min_interactions: got {self.min_interactions}, expected >= 3 (a test row, a "
                               "validation row and at least one training row)")
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise PrepareError(f"--{name}: got {value}, expected a number in (0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise PrepareError("--valid_fraction + --test_fraction must leave training rows (sum < 1)")
        if (self.valid_start is None) != (self.test_start is None):
            raise PrepareError("--valid_start and --test_start go together (or neither: the fractions decide)")
        if self.valid_start is not None and not self.valid_start < self.test_start:
            raise PrepareError(f"--valid_start ({self.valid_start}) must be before --test_start ({self.test_start})")
        if self.split == "leave_last_out" and self.valid_start is not None:
            raise PrepareError("--valid_start / --test_start need --split time")


# ---- reading ----------------------------------------------------------------------------------

def read_table(path: str, flag: str) -> pa.Table:
    """Every file of ``path`` (a file, folder, glob or comma-separated list; Parquet or CSV by
    suffix) as one table."""
    try:
        files = expand_input_paths(path, suffixes=(".parquet", ".csv"))
    except FileNotFoundError as e:
        raise PrepareError(f"{flag} {path}: {e}") from None
    if not files:
        raise PrepareError(f"{flag} {path}: no .parquet or .csv file there")
    tables = []
    for file in files:
        try:
            tables.append(pa_csv.read_csv(file) if file.lower().endswith(".csv") else pq.read_table(file))
        except (pa.ArrowException, OSError) as e:
            raise PrepareError(f"{flag} {file}: cannot read it: {e}") from None
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as e:
        raise PrepareError(f"{flag} {path}: its files have incompatible columns: {e}") from None


def _require_columns(table: pa.Table, columns, where: str) -> None:
    for column in columns:
        if column not in table.column_names:
            raise PrepareError(f"{where}: no column '{column}' (it has {table.column_names})")


def _first_null(column: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _no_nulls(column: pa.ChunkedArray, where: str, what: str) -> None:
    if column.null_count:
        raise PrepareError(f"{where}: {column.null_count} null {what}(s), the first in row {_first_null(column)}")


def to_seconds(column: pa.ChunkedArray, where: str) -> np.ndarray:
    """(N,) int64 Unix seconds of a time column (see the module docstring for the forms)."""
    _no_nulls(column, where, "time")
    kind = column.type
    if pa.types.is_integer(kind):
        return column.to_numpy().astype(np.int64)
    if pa.types.is_floating(kind):
        values = column.to_numpy()
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PrepareError(f"{where}: row {row} holds {values[row]}, expected a finite time")
        return np.floor(values).astype(np.int64)
    if pa.types.is_timestamp(kind):
        return pc.cast(column, pa.timestamp("s", tz=kind.tz)).cast(pa.int64()).to_numpy()
    if pa.types.is_date(kind):
        return pc.cast(pc.cast(column, pa.date32()), pa.int32()).to_numpy().astype(np.int64) * 86400
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_iso(column, where)
    raise PrepareError(f"{where}: type {kind}, expected Unix seconds, an Arrow timestamp or ISO-8601 text")


def _parse_iso(column: pa.ChunkedArray, where: str) -> np.ndarray:
    # Arrow's parser first (fast), with a zone or without (naive = UTC); Python's for the rest,
    # which also finds the first value that is not a time.
    for tz in ("UTC", None):
        try:
            micros = pc.cast(column, pa.timestamp("us", tz)).cast(pa.int64()).to_numpy()
            return np.floor_divide(micros, 1_000_000)
        except pa.ArrowException:
            pass
    values = column.to_pylist()
    out = np.empty(len(values), dtype=np.int64)
    for row, text in enumerate(values):
        try:
            moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PrepareError(f"{where}: row {row} holds {text!r}, which is not a time (expected Unix seconds, an "
                               "Arrow timestamp or ISO-8601 text such as 2024-03-01T12:30:00Z)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        out[row] = math.floor(moment.timestamp())
    return out


# ---- the split --------------------------------------------------------------------------------

def _ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated index ranges [starts[i], starts[i] + lengths[i]) and their (k+1,) offsets."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.arange(int(offsets[-1]), dtype=np.int64)
    flat += np.repeat(starts - offsets[:-1], lengths)
    return flat, offsets


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    """list<values.type> of the jagged ``values`` (large_list beyond 2^31 values)."""
    if offsets[-1] < 2**31 - 1:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)


def _item_side_columns(items: pa.Table | None, spec: SplitSpec) -> list[str]:
    """The item's side columns: those of the item table but its id, else ``spec.item_features``."""
    return [c for c in items.column_names if c != spec.item_col] if items is not None else list(spec.item_features)


def _one_value_per_row(column: pa.ChunkedArray) -> pa.Array:
    """The column itself, or for a list column its values as text joined by "|" (one per row)."""
    column = column.combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return pc.binary_join(column.cast(pa.list_(pa.string())), "|")
    return column


def _sorted_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Codes of the values (their rank among the distinct values) and the sorted distinct values."""
    distinct = pc.unique(column)
    distinct = distinct.take(pc.sort_indices(distinct))
    return pc.index_in(column, distinct).to_numpy(zero_copy_only=False).astype(np.int64), distinct


def _join(keys: pa.ChunkedArray, side: pa.Table, column: str, where: str, keys_where: str) -> np.ndarray:
    """Row of ``side`` for each key (every key must be there, once)."""
    ids = side.column(column)
    _no_nulls(ids, where, f"'{column}'")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        duplicate = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise PrepareError(f"{where}: '{column}' {duplicate!r} is listed more than once, expected one row per id")
    try:
        keys = keys.cast(ids.type)
    except pa.ArrowException:
        raise PrepareError(f"{where}: '{column}' is {ids.type}, but {keys_where} holds {keys.type}") from None
    rows = pc.index_in(keys, ids)
    if rows.null_count:
        missing = pc.unique(keys.filter(rows.is_null())).to_pylist()
        raise PrepareError(f"{where}: {len(missing)} '{column}' value(s) of {keys_where} are not there: "
                           f"{missing[:10]}")
    return rows.to_numpy(zero_copy_only=False).astype(np.int64)


def _split_masks(ts: np.ndarray, pos: np.ndarray, cnt: np.ndarray, spec: SplitSpec,
                 where: str) -> tuple[np.ndarray, np.ndarray, dict]:
    if spec.split == "leave_last_out":
        evaluable = cnt >= spec.min_interactions
        return evaluable & (pos == cnt - 1), evaluable & (pos == cnt - 2), {}
    if spec.test_start is None:
        ordered = np.sort(ts)
        n = len(ordered)
        # The times of the rows at those shares of the time order: at least the fraction (ties in
        # time stay on one side, so a share can be larger).
        test_start = int(ordered[min(n - 1, int(n * (1 - spec.test_fraction)))])
        valid_start = int(ordered[min(n - 1, int(n * (1 - spec.test_fraction - spec.valid_fraction)))])
    else:
        valid_start, test_start = int(math.floor(spec.valid_start)), int(math.floor(spec.test_start))
    is_test = ts >= test_start
    is_valid = (ts >= valid_start) & ~is_test
    for name, mask in (("training", ~(is_test | is_valid)), ("validation", is_valid), ("test", is_test)):
        if not mask.any():
            raise PrepareError(f"{where}: the time split (validation from {valid_start}, test from {test_start}) "
                               f"leaves no {name} rows; choose other --valid_start / --test_start or fractions")
    return is_test, is_valid, {"valid_start": valid_start, "test_start": test_start}


def split_interactions(interactions: pa.Table, spec: SplitSpec, users: pa.Table | None = None,
                       items: pa.Table | None = None, names: dict[str, str] | None = None) -> dict[str, pa.Table]:
    """Split an interaction log (module docstring); returns {"train", "valid", "test", "items"
    [, "users"]} tables and, under "info", a one-row table of facts about the split.

    ``names`` gives the sources' names for messages ({"interactions", "users", "items"}).
    """
    names = {"interactions": "--interactions", "users": "--users", "items": "--items", **(names or {})}
    src = names["interactions"]
    _require_columns(interactions, [spec.user_col, spec.item_col, spec.time_col, *spec.item_features], src)
    if interactions.num_rows == 0:
        raise PrepareError(f"{src}: no rows")
    _no_nulls(interactions.column(spec.user_col), f"{src} column '{spec.user_col}'", "user id")
    _no_nulls(interactions.column(spec.item_col), f"{src} column '{spec.item_col}'", "item id")
    ts = to_seconds(interactions.column(spec.time_col), f"{src} column '{spec.time_col}'")
    if users is not None:
        _require_columns(users, [spec.user_col], names["users"])
    if items is not None:
        _require_columns(items, [spec.item_col], names["items"])
    item_side = _item_side_columns(items, spec)
    not_items = [c for c in spec.history_item_features if c not in item_side]
    if not_items:
        raise PrepareError(f"--history_item_features: {not_items} not item side column(s); expected columns of "
                           f"{names['items'] if items is not None else '--item_features'}: {sorted(item_side)}")
    reserved = {spec.history_col, spec.history_time_col, spec.seen_col, spec.since_last_col,
                *(f"hist_{c}" for c in spec.history_item_features)}
    for side, table in (("users", users), ("items", items)):
        key = spec.user_col if side == "users" else spec.item_col
        if table is None:
            continue
        clash = [c for c in table.column_names if c != key and c in interactions.column_names]
        if clash:
            raise PrepareError(f"{names[side]}: column(s) {clash} are in {src} too; rename one of them")
    for table, where in ((interactions, src), (users, names["users"]), (items, names["items"])):
        if table is not None and reserved & set(table.column_names):
            raise PrepareError(f"{where}: column(s) {sorted(reserved & set(table.column_names))} are the names of "
                               "the columns prepare adds; rename them")

    n = interactions.num_rows
    user_codes, _ = _sorted_codes(interactions.column(spec.user_col))
    item_codes, item_values = _sorted_codes(interactions.column(spec.item_col))
    order = np.lexsort((np.arange(n), ts, user_codes))
    if spec.repeats != "keep":
        pair = user_codes[order] * (len(item_values) + 1) + item_codes[order]
        if spec.repeats == "first":
            _, kept = np.unique(pair, return_index=True)
        else:
            _, last_from_end = np.unique(pair[::-1], return_index=True)
            kept = len(pair) - 1 - last_from_end
        order = order[np.sort(kept)]
    user_codes, item_codes, ts = user_codes[order], item_codes[order], ts[order]
    m = len(order)

    first = np.ones(m, dtype=bool)
    first[1:] = user_codes[1:] != user_codes[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, m))
    group = np.cumsum(first) - 1
    pos = np.arange(m) - starts[group]
    is_test, is_valid, split_info = _split_masks(ts, pos, counts[group], spec, src)

    rows_table = interactions.take(pa.array(order))
    side_columns: list[tuple[str, pa.ChunkedArray]] = []
    user_rows = item_rows = None
    if users is not None:
        user_rows = _join(rows_table.column(spec.user_col), users, spec.user_col, names["users"], src)
        side_columns += [(c, users.column(c).take(pa.array(user_rows))) for c in users.column_names
                         if c != spec.user_col]
    if items is not None:
        item_rows = _join(rows_table.column(spec.item_col), items, spec.item_col, names["items"], src)
        side_columns += [(c, items.column(c).take(pa.array(item_rows))) for c in items.column_names
                         if c != spec.item_col]
    full = rows_table
    for name, column in side_columns:
        full = full.append_column(name, column)
    item_ids = full.column(spec.item_col).combine_chunks()
    history_values = {c: _one_value_per_row(full.column(c)) for c in spec.history_item_features}

    def build(idx: np.ndarray, with_seen: bool) -> pa.Table:
        hlen = np.minimum(pos[idx], spec.max_history)
        flat, offsets = _ranges(idx - hlen, hlen)
        table = full.take(pa.array(idx))
        table = table.append_column(spec.history_col, _list_array(offsets, item_ids.take(pa.array(flat))))
        table = table.append_column(spec.history_time_col, _list_array(offsets, pa.array(ts[flat], pa.int64())))
        for c, values in history_values.items():
            table = table.append_column(f"hist_{c}", _list_array(offsets, values.take(pa.array(flat))))
        previous = np.maximum(idx - 1, 0)  # the user's previous interaction where pos > 0
        since_last = np.where(pos[idx] > 0, ts[idx] - ts[previous], -1)
        table = table.append_column(spec.since_last_col, pa.array(since_last, pa.int64()))
        if not with_seen:
            return table
        earlier = pos[idx]
        flat, _ = _ranges(idx - earlier, earlier)
        row_of = np.repeat(np.arange(len(idx)), earlier)
        codes = item_codes[flat]
        o = np.lexsort((codes, row_of))
        row_of, codes = row_of[o], codes[o]
        keep = np.ones(len(codes), dtype=bool)
        keep[1:] = (row_of[1:] != row_of[:-1]) | (codes[1:] != codes[:-1])
        seen_offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(np.bincount(row_of[keep], minlength=len(idx)), out=seen_offsets[1:])
        return table.append_column(spec.seen_col, _list_array(seen_offsets, item_values.take(pa.array(codes[keep]))))

    out = {
        "train": build(np.flatnonzero(~(is_test | is_valid)), with_seen=False),
        "valid": build(np.flatnonzero(is_valid), with_seen=True),
        "test": build(np.flatnonzero(is_test), with_seen=True),
    }
    if items is not None:
        out["items"] = items if spec.catalogue == "all" else items.take(pa.array(np.unique(item_rows)))
    else:
        # The interacted items, sorted by id, with each item's latest item_features values
        # (rows are in user order here: the latest is found by time, ties by row order).
        time_order = np.argsort(ts, kind="stable")
        time_rank = np.empty(m, dtype=np.int64)
        time_rank[time_order] = np.arange(m)
        latest = np.full(len(item_values), -1, dtype=np.int64)
        np.maximum.at(latest, item_codes, time_rank)
        present = np.flatnonzero(latest >= 0)
        rows = pa.array(time_order[latest[present]])
        out["items"] = pa.table({spec.item_col: item_values.take(pa.array(present)),
                                 **{c: full.column(c).take(rows) for c in spec.item_features}})
    if users is not None:
        out["users"] = users.take(pa.array(np.unique(user_rows)))
    num_users = len(starts)
    cold_users = int((counts < spec.min_interactions).sum()) if spec.split == "leave_last_out" else 0
    train_items = set(item_codes[~(is_test | is_valid)].tolist())
    eval_items = set(item_codes[is_test | is_valid].tolist())
    out["info"] = {"num_interactions": int(n), "num_rows_after_repeats": int(m), "num_users": int(num_users),
                   "num_items": int(out["items"].num_rows), "cold_users": cold_users,
                   "cold_items": len(eval_items - train_items), **split_info}
    return out


# ---- writing ----------------------------------------------------------------------------------

def check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` that is not a prepared set, unless ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PrepareError(f"--out {str(out)!r} is not empty: pass --overwrite to replace it, or choose another folder")


def write_prepared(tables: dict, out_dir: str | os.PathLike, manifest: dict) -> tuple[dict[str, str], dict]:
    """Write the tables and ``_manifest.json`` into a new folder that replaces ``out_dir`` whole;
    returns ({table: path, "manifest": path}, the manifest written)."""
    names = [k for k in ("train", "valid", "test", "items", "users") if k in tables]
    with atomic_directory(out_dir) as tmp:
        for name in names:
            pq.write_table(tables[name], tmp / f"{name}.parquet", compression="zstd", row_group_size=ROW_GROUP_SIZE)
        manifest = {**manifest, "row_counts": {k: tables[k].num_rows for k in names},
                    "files": {k: f"{k}.parquet" for k in names}}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    paths = {**{k: str(Path(out_dir) / f"{k}.parquet") for k in names}, "manifest": str(Path(out_dir) / MANIFEST_NAME)}
    return paths, manifest


@dataclass
class Prepared:
    """What :func:`prepare_interactions` wrote: the paths and the manifest."""

    paths: dict[str, str]
    manifest: dict = field(default_factory=dict)


def prepare_interactions(interactions: str, out_dir: str, spec: SplitSpec, users: str | None = None,
                         items: str | None = None, overwrite: bool = False) -> Prepared:
    """Read the files, split them (:func:`split_interactions`) and write the prepared set."""
    check_out_dir(out_dir, overwrite)
    log = read_table(interactions, "--interactions")
    user_table = read_table(users, "--users") if users else None
    item_table = read_table(items, "--items") if items else None
    tables = split_interactions(log, spec, user_table, item_table,
                                {"interactions": f"--interactions {interactions}", "users": f"--users {users}",
                                 "items": f"--items {items}"})
    from recframe import __version__

    info = tables.pop("info")
    user_side = [c for c in user_table.column_names if c != spec.user_col] if user_table is not None else []
    item_side = _item_side_columns(item_table, spec)
    manifest = {
        "format_version": FORMAT_VERSION,
        "recframe_version": __version__,
        "sources": {"interactions": interactions, "users": users, "items": items},
        "spec": asdict(spec),
        "columns": {"user": spec.user_col, "item": spec.item_col, "time": spec.time_col,
                    "history": spec.history_col, "history_time": spec.history_time_col, "seen": spec.seen_col,
                    "since_last": spec.since_last_col,
                    "history_item_features": {c: f"hist_{c}" for c in spec.history_item_features},
                    "user_features": user_side, "item_features": item_side},
        "info": info,
    }
    return Prepared(*write_prepared(tables, out_dir, manifest))


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The ``_manifest.json`` of a prepared folder."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise PrepareError(f"{str(data_dir)!r}: no {MANIFEST_NAME}: not a folder written by recframe prepare")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise PrepareError(f"{path}: not valid JSON: {e}") from None


__all__ = ["CATALOGUES", "MANIFEST_NAME", "PrepareError", "Prepared", "REPEATS", "SPLITS", "SplitSpec",
           "check_out_dir", "prepare_interactions", "read_manifest", "read_table", "split_interactions",
           "to_seconds", "write_prepared"]
