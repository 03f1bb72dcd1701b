"""An EmbeddingGroup's tables as a TorchRec EmbeddingCollection (the optional ``torchrec`` extra).

:class:`TorchRecLookup` holds the tables of one EmbeddingGroup in TorchRec
``EmbeddingCollection`` modules (one table per embedding_name, every feature that names it as
one of its ``feature_names``; one collection per embedding width, as TorchRec requires) and looks
up all of the group's features of a batch at once, one ``KeyedJaggedTensor`` per collection; the
group pools or pads the per-id embeddings itself. Sharded by
``DistributedModelParallel`` (:mod:`recframe.training.sharding`), the tables are split across
the ranks and updated by a fused optimizer in the backward pass.

TorchRec is imported only here, only when sharding is configured.
"""

from __future__ import annotations

import torch
from torch import nn

from recframe.batch import SPARSE, Batch
from recframe.errors import RecframeError

INSTALL = ("install the torchrec extra: on CUDA, pip install 'recframe[torchrec]'; on a CPU-only machine, "
           "pip install torch==2.13.0 && pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 && "
           "pip install tensordict pyre-extensions (docs/distributed.md)")


class MissingTorchRecError(RecframeError, ImportError):
    """TorchRec is not installed (it is the optional extra ``recframe[torchrec]``)."""


def require_torchrec() -> None:
    """Import TorchRec, or raise :class:`MissingTorchRecError` saying how to install it."""
    try:
        import torchrec  # noqa: F401  (optional dependency, imported lazily)
    except Exception as e:  # ImportError, or a broken fbgemm build raising at import
        raise MissingTorchRecError(f"train_config.embedding_sharding needs TorchRec, which cannot be imported "
                                   f"({type(e).__name__}: {e}); {INSTALL}") from e


class TorchRecLookup(nn.Module):
    """The tables of an EmbeddingGroup as TorchRec EmbeddingCollections (one per width).

    Args:
        group: the EmbeddingGroup whose tables (``group.table_specs``) the collections hold; they
            are created on the meta device, for ``DistributedModelParallel`` to allocate.

    Input: a Batch. Output: {feature name: (ids, D) embeddings}, in the order of the feature's
    ids (a sparse feature's ``values``, a sequence's valid positions row by row).
    """

    def __init__(self, group: nn.Module) -> None:
        super().__init__()
        require_torchrec()
        from torchrec import EmbeddingCollection, EmbeddingConfig

        features = [f for f in group.features.values() if f.embedding is not None]
        self.features: dict[str, list] = {}  # collection key -> its features, in KJT key order
        collections = {}
        for dim in sorted({spec.embedding_dim for spec in group.table_specs.values()}):
            key = f"dim{dim}"
            configs = [EmbeddingConfig(name=name, embedding_dim=dim, num_embeddings=spec.num_embeddings,
                                       feature_names=[f.name for f in features if f.embedding.name == name])
                       for name, spec in group.table_specs.items() if spec.embedding_dim == dim]
            self.features[key] = [f for f in features if group.table_specs[f.embedding.name].embedding_dim == dim]
            # On the meta device: the sharding allocates each rank's shards, and the group's
            # weights are copied into them (recframe.training.sharding).
            collections[key] = EmbeddingCollection(tables=configs, device=torch.device("meta"))
        self.collections = nn.ModuleDict(collections)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, collection in self.collections.items():
            looked = collection(self._kjt(batch, self.features[key]))
            for f in self.features[key]:
                out[f.name] = looked[f.name].values()
        return out

    @staticmethod
    def _kjt(batch: Batch, features: list):
        """The ids of ``features`` as one KeyedJaggedTensor."""
        from torchrec import KeyedJaggedTensor

        values, lengths = [], []
        for feature in features:
            if feature.kind == SPARSE:
                ids = batch.sparse[feature.name]
                values.append(ids.values)
                lengths.append(ids.offsets[1:] - ids.offsets[:-1])
            else:
                seq = batch.sequence[feature.name]
                values.append(seq.ids[seq.mask()])
                lengths.append(seq.lengths)
        # One stride for every key: the user features' B rows padded with empty ones to the
        # item rows' N (positives and sampled negatives).
        stride = max(len(n) for n in lengths)
        lengths = [torch.cat([n, n.new_zeros(stride - len(n))]) for n in lengths]
        return KeyedJaggedTensor.from_lengths_sync(keys=[f.name for f in features], values=torch.cat(values),
                                                   lengths=torch.cat(lengths))


__all__ = ["INSTALL", "MissingTorchRecError", "TorchRecLookup", "require_torchrec"]
