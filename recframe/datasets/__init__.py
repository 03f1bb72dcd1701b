"""Public data sets: download, parse and split into the Parquet tables recframe trains on.

``prepare_movielens(variant, output_dir, raw_dir=None)`` is the entry point; see
:mod:`recframe.datasets.movielens`. Names are imported lazily so that
``python -m recframe.datasets.movielens`` does not import the module twice.
"""

from __future__ import annotations

__all__ = ["MovieLensDataError", "load_movielens", "prepare_movielens", "split_movielens"]


def __getattr__(name: str):
    if name in __all__:
        from recframe.datasets import movielens

        return getattr(movielens, name)
    raise AttributeError(f"module 'recframe.datasets' has no attribute {name!r}")
