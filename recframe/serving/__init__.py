"""Serving: exported towers and item indexes (approximate nearest-neighbour search)."""

from recframe.serving.tower import Tower, TowerLoadError, load_tower

__all__ = ["Tower", "TowerLoadError", "load_tower"]
