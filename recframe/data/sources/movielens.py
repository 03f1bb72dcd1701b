"""MovieLens ML-100K / ML-1M -> the reference leave-last-two-out split, as Parquet tables.

Usage::

    recframe prepare --movielens ml-100k --out data/ml-100k [--raw_dir RAW] [--max_history 50]

or from Python :func:`prepare_movielens` (the trainer calls it when a config's data is missing).

Protocol (DESIGN.md, "MovieLens protocol", version :data:`PROTOCOL_VERSION`)
--------------------------------------------------------------------------------
- Implicit feedback: every rating is a positive (``label`` = rating >= 4 is kept for pointwise
  experiments, but every row is an interaction).
- Per user, interactions are stable-sorted by (timestamp, line order in the raw ratings file).
- The last interaction is the test target, the one before it the validation target, all earlier
  ones are training targets. Users with fewer than 3 interactions have all of them in train and
  no validation / test row (ML-100K and ML-1M have >= 20 ratings per user, so none is affected).
- Every row carries the user's earlier items (in that order, most recent last, truncated to the
  last ``max_history``, default :data:`MAX_HISTORY`) as its history. A user's first training row has an empty history; the
  validation history is the training items, the test history the training items + the
  validation item. ``hist_year`` and ``hist_genres`` give each history item's release year and
  genres (joined by ``|``, e.g. ``"Action|Comedy"``), aligned with ``hist_movie_ids``;
  ``seconds_since_last`` the seconds from the user's previous rating to the row's (-1 for the
  first row): 0 for about half of the training rows, rated in the same second as the one before.
- ``seen_items`` (valid/test only) lists the items to exclude from that user's candidates: for
  valid all training items, for test the training items + the validation item; untruncated,
  unique, sorted by movie_id.

Outputs in the output folder (Parquet, zstd): ``train``, ``valid``, ``test``, ``items`` and
``users`` ``.parquet``; see :data:`ROW_SCHEMA` and the module constants for the exact schema.
``_manifest.json`` is written last: the set is complete exactly when it exists and matches.

Raw files are found, fetched and read by :mod:`recframe.data.sources.movielens_files`.

MovieLens is research-only data and may not be redistributed: nothing here copies it anywhere but
the user's own cache and output folders.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recframe.config.report import AT_LEAST_ONE, unknown_name
from recframe.data.prepare import PrepareError, SplitSpec, split_interactions
from recframe.data.sources.movielens_files import (
    ITEM_SCHEMA,
    RECBOLE_ML100K,
    USER_SCHEMA,
    VARIANTS,
    MovieLensDataError,
    RawMovieLens,
    _find_local,
    _recbole_members,
    _variant_info,
    file_digest,
    load_movielens,
)
from recframe.files import atomic_write, atomic_write_text
from recframe.registry import DATA_SOURCES

PROTOCOL_VERSION = 1
MAX_HISTORY = 50
TABLES = ("train", "valid", "test", "items", "users")
MANIFEST_NAME = "_manifest.json"

_LIST_INT = pa.list_(pa.int64())
_LIST_STR = pa.list_(pa.string())

ROW_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("movie_id", pa.int64()),
        ("rating", pa.int64()),
        ("timestamp", pa.int64()),
        ("gender", pa.string()),
        ("age", pa.int64()),
        ("occupation", pa.string()),
        ("zip_prefix", pa.string()),
        ("hist_movie_ids", _LIST_INT),
        ("hist_timestamps", _LIST_INT),
        ("hist_year", _LIST_INT),
        ("hist_genres", _LIST_STR),
        ("seconds_since_last", pa.int64()),
        ("genres", _LIST_STR),
        ("title", pa.string()),
        ("year", pa.int64()),
        ("label", pa.int64()),
    ]
)
EVAL_SCHEMA = ROW_SCHEMA.append(pa.field("seen_items", _LIST_INT))
SCHEMAS = {
    "train": ROW_SCHEMA,
    "valid": EVAL_SCHEMA,
    "test": EVAL_SCHEMA,
    "items": ITEM_SCHEMA,
    "users": USER_SCHEMA,
}

ROW_GROUP_SIZE = 16384  # several row groups even for ML-100K, so readers can shard by row group


# --------------------------------------------------------------------------------------------
# the split


def split_movielens(raw: RawMovieLens, max_history: int = MAX_HISTORY) -> dict[str, pa.Table]:
    """Apply the reference protocol (module docstring) to ``raw``; returns the five tables.

    The protocol is :func:`recframe.data.prepare.split_interactions`'s leave-last-out split
    (ratings in raw line order break time ties), with MovieLens' column order.
    """
    r = raw.ratings
    if np.asarray(r["user_id"]).size == 0:
        raise MovieLensDataError(f"{raw.source}: no ratings")
    rating = np.asarray(r["rating"], dtype=np.int64)
    interactions = pa.table({
        "user_id": pa.array(np.asarray(r["user_id"], dtype=np.int64)),
        "movie_id": pa.array(np.asarray(r["movie_id"], dtype=np.int64)),
        "rating": pa.array(rating),
        "timestamp": pa.array(np.asarray(r["timestamp"], dtype=np.int64)),
        "label": pa.array((rating >= 4).astype(np.int64)),
    })
    spec = SplitSpec(user_col="user_id", item_col="movie_id", time_col="timestamp", max_history=max_history,
                     history_col="hist_movie_ids", history_time_col="hist_timestamps", seen_col="seen_items",
                     history_item_features=("year", "genres"))
    try:
        tables = split_interactions(interactions, spec, raw.users, raw.items,
                                    {"interactions": f"the ratings of {raw.source}",
                                     "users": f"the users file of {raw.source}",
                                     "items": f"the movies file of {raw.source}"})
    except PrepareError as e:
        raise MovieLensDataError(str(e)) from None
    return {
        "train": tables["train"].select(ROW_SCHEMA.names).cast(ROW_SCHEMA),
        "valid": tables["valid"].select(EVAL_SCHEMA.names).cast(EVAL_SCHEMA),
        "test": tables["test"].select(EVAL_SCHEMA.names).cast(EVAL_SCHEMA),
        "items": tables["items"],
        "users": tables["users"],
    }


# --------------------------------------------------------------------------------------------
# writing


def output_paths(output_dir: str | os.PathLike) -> dict[str, str]:
    """The paths :func:`prepare_movielens` writes (``"manifest"`` included)."""
    d = Path(output_dir)
    out = {name: str(d / f"{name}.parquet") for name in TABLES}
    out["manifest"] = str(d / MANIFEST_NAME)
    return out


def _manifest_ok(manifest: dict, variant: str, max_history: int, paths: dict[str, str],
                 checksums: dict | None) -> bool:
    if manifest.get("protocol_version") != PROTOCOL_VERSION or manifest.get("variant") != variant:
        return False
    if manifest.get("max_history") != max_history:
        return False
    if checksums is not None and manifest.get("sources") != checksums:
        return False
    counts = manifest.get("row_counts", {})
    for name in TABLES:
        p = paths[name]
        if not os.path.isfile(p):
            return False
        try:
            md = pq.read_metadata(p)
        except (OSError, pa.ArrowException):
            return False
        if md.num_rows != counts.get(name) or not md.schema.to_arrow_schema().equals(SCHEMAS[name]):
            return False
    return True


def write_tables(tables: dict[str, pa.Table], output_dir: str | os.PathLike, manifest: dict) -> dict[str, str]:
    """Write the tables atomically, then the manifest (``row_counts``/``files`` filled in)."""
    d = Path(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = output_paths(d)
    Path(paths["manifest"]).unlink(missing_ok=True)  # incomplete until the new manifest lands
    for name in TABLES:
        atomic_write(
            paths[name],
            lambda f, t=tables[name]: pq.write_table(t, f, compression="zstd", row_group_size=ROW_GROUP_SIZE),
        )
    manifest = dict(manifest)
    manifest["row_counts"] = {name: tables[name].num_rows for name in TABLES}
    manifest["files"] = {name: Path(paths[name]).name for name in TABLES}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write_text(paths["manifest"], text)
    return paths


def prepare_movielens(
    variant: str,
    output_dir: str,
    raw_dir: str | None = None,
    *,
    download: bool = True,
    force: bool = False,
    max_history: int = MAX_HISTORY,
) -> dict[str, str]:
    """Prepare the reference split of MovieLens ``variant`` ("ml-100k" or "ml-1m") in ``output_dir``.

    Each row's history keeps the user's last ``max_history`` earlier items.

    Returns ``{"train", "valid", "test", "items", "users", "manifest"} -> path``. Idempotent:
    when ``output_dir`` already holds a complete set whose manifest matches (variant, protocol
    version, history length, row counts, schema, and, when raw files are available locally,
    their checksums), nothing is read or written. ``force`` rebuilds regardless; ``download=False``
    never touches the network.
    """
    _variant_info(variant)
    if max_history < 1:
        raise MovieLensDataError(f"max_history: got {max_history}, expected >= 1")
    paths = output_paths(output_dir)
    if not force and os.path.isfile(paths["manifest"]):
        try:
            manifest = json.loads(Path(paths["manifest"]).read_text())
        except (OSError, ValueError):
            manifest = {}
        kind, where = _find_local(variant, raw_dir)
        if kind is None:
            checksums = None  # nothing local to compare with: the complete outputs are trusted
        elif kind == "recbole":
            checksums = {
                f"{Path(RECBOLE_ML100K).name}.{ext}": hashlib.md5(b).hexdigest()
                for ext, b in _recbole_members(where).items()
            }
        else:
            checksums = _local_checksums(variant, Path(where))
        if _manifest_ok(manifest, variant, max_history, paths, checksums):
            return paths
    raw = load_movielens(variant, raw_dir, download=download)
    tables = split_movielens(raw, max_history)
    from recframe import __version__

    manifest = {
        "dataset": "movielens",
        "variant": variant,
        "protocol_version": PROTOCOL_VERSION,
        "max_history": max_history,
        "source": raw.source,
        "sources": raw.checksums,
        "recframe_version": __version__,
    }
    return write_tables(tables, output_dir, manifest)


def _local_checksums(variant: str, d: Path) -> dict[str, str]:
    names = list(_variant_info(variant)["files"])
    if variant == "ml-100k" and (d / "u.genre").exists():
        names.append("u.genre")
    out = {}
    for name in names:
        p = d / name
        if not p.is_file():
            raise MovieLensDataError(f"missing file {p}")
        out[name] = file_digest(p, "md5")
    return out


@DATA_SOURCES.register()
class MovieLensSource:
    """``data_config.movielens``: prepare the MovieLens tables of a config when they are missing.

    Args:
        config: the MovieLensSource message (variant, output_dir, raw_dir, max_history).
    """

    config_ranges = {"max_history": AT_LEAST_ONE}

    @classmethod
    def check_config(cls, message, path: str, ctx) -> None:
        if message.variant not in VARIANTS:
            ctx.add(f"{path}.variant", unknown_name("MovieLens variant", message.variant, list(VARIANTS)))

    def __init__(self, config) -> None:
        self.config = config

    def prepare(self) -> None:
        """Write the tables into output_dir unless an up-to-date set is there already."""
        prepare_movielens(self.config.variant, self.config.output_dir, self.config.raw_dir or None,
                          max_history=self.config.max_history)
