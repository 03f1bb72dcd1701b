"""Data sources (DATA_SOURCES registry): prepare the tables a config reads.

A data source is a message of DataConfig (e.g. ``data_config.movielens``) whose class, registered
under the message's name, has ``check_config(message, path, ctx)`` and ``prepare()``; the
pipeline prepares every source that is set before reading the data.
"""

from recframe.data.sources.movielens import MovieLensSource, prepare_movielens

__all__ = ["MovieLensSource", "prepare_movielens"]
