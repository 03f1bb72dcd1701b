"""DSSM and DSSMV2 two-tower models."""

from __future__ import annotations

from recframe.batch import SEQUENCE, SPARSE
from recframe.models.match_model import MatchModel
from recframe.modules import EmbeddingGroup
from recframe.registry import MODELS


@MODELS.register()
class DSSM(MatchModel):
    """Two towers, each with its own EmbeddingGroup (no parameter shared across towers).

    A table named by features of both towers exists twice, once per tower (validation warns;
    DSSMV2 shares it).
    """

    def build_embedding_groups(self, features, user_groups, item_groups):
        return (EmbeddingGroup(features, user_groups, self.sparse_embeddings),
                EmbeddingGroup(features, item_groups, self.sparse_embeddings))

    @classmethod
    def check_config(cls, message, path: str, ctx) -> None:
        """MatchModel's rules, and a warning for each embedding_name used by both towers."""
        super().check_config(message, path, ctx)
        if cls.build_embedding_groups is DSSM.build_embedding_groups:
            cls._warn_tables_of_both_towers(message, path, ctx)

    @staticmethod
    def _warn_tables_of_both_towers(message, path: str, ctx) -> None:
        """An embedding_name named in both towers makes two tables under DSSM: say so."""
        tables: dict[str, dict[str, list[str]]] = {}  # table -> tower -> features
        for side in MatchModel.TOWERS:
            for group in getattr(message, side).input:
                if group not in ctx.groups:
                    continue
                for name in ctx.groups[group][1].feature_names:
                    feature = ctx.features.get(name)
                    if feature is None or feature.kind not in (SPARSE, SEQUENCE) or feature.embedding is None:
                        continue
                    names = tables.setdefault(feature.embedding.name, {}).setdefault(side, [])
                    if name not in names:
                        names.append(name)
        for table, sides in tables.items():
            if len(sides) == len(MatchModel.TOWERS):
                users, items = (", ".join(sides[side]) for side in MatchModel.TOWERS)
                ctx.warn(path, f"embedding table '{table}' is named by features of both towers (user_tower: {users}; "
                               f"item_tower: {items}), but dssm gives each tower its own tables: two separate "
                               f"'{table}' tables are trained, one per tower (dssm_v2 shares one table between the "
                               "towers)")


@MODELS.register()
class DSSMV2(MatchModel):
    """Two towers over one shared EmbeddingGroup.

    A table named by features of both towers (e.g. the item id of the item tower and the
    user's history of item ids) is a single parameter trained by both towers.
    """

    def build_embedding_groups(self, features, user_groups, item_groups):
        shared = EmbeddingGroup(features, [*user_groups, *item_groups], self.sparse_embeddings)
        return shared, shared
