"""DSSM and DSSMV2 two-tower models."""

from __future__ import annotations

from recframe.models.match_model import MatchModel
from recframe.modules import EmbeddingGroup
from recframe.registry import MODELS


@MODELS.register()
class DSSM(MatchModel):
    """Two towers, each with its own EmbeddingGroup (no parameter shared across towers).

    A table named by features of both towers exists twice, once per tower.
    """

    def build_embedding_groups(self, features, user_groups, item_groups):
        return (EmbeddingGroup(features, user_groups, self.sparse_embeddings),
                EmbeddingGroup(features, item_groups, self.sparse_embeddings))


@MODELS.register()
class DSSMV2(MatchModel):
    """Two towers over one shared EmbeddingGroup.

    A table named by features of both towers (e.g. the item id of the item tower and the
    user's history of item ids) is a single parameter trained by both towers.
    """

    def build_embedding_groups(self, features, user_groups, item_groups):
        shared = EmbeddingGroup(features, [*user_groups, *item_groups], self.sparse_embeddings)
        return shared, shared
