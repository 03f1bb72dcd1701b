"""Training with the embedding tables sharded across ranks by TorchRec (``train_config.embedding_sharding``).

:class:`ShardedEmbeddings` turns every EmbeddingGroup of a model into a TorchRec
EmbeddingCollection (:class:`~recframe.modules.torchrec_tables.TorchRecLookup`), attaches the
sparse optimizer as a fused optimizer (applied in the backward pass, to the rows looked up
only), asks TorchRec's planner for a sharding plan (within the configured sharding types) and
wraps the model in ``DistributedModelParallel``: each table lives on the ranks its shards are
placed on, not on every rank; the other parameters stay data-parallel (DDP inside DMP).

Checkpoints stay independent of the world size and of TorchRec: :meth:`ShardedEmbeddings.state_dict`
gathers each table into the state_dict keys of the unsharded model
(``...embedding_group.tables.<name>.weight``), and the fused optimizer's state into whole tensors;
loading slices them into whatever shards this run has. Evaluation, test and export run on
plain (unsharded) tables: :meth:`ShardedEmbeddings.plain_tables` gathers them on every rank for
the time of an evaluation.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from recframe import distributed
from recframe.config.names import SHARDING_TYPES
from recframe.modules.embedding_group import EmbeddingGroup
from recframe.modules.torchrec_tables import TorchRecLookup, require_torchrec
from recframe.protos import optimizer_pb2, train_pb2
from recframe.training.optim import DEFAULT_SPARSE_OPTIMIZER, proto_float

_LOOKUP_KEY = re.compile(r"^(?P<prefix>.*embedding_group\.)lookup\.collections\.[^.]+\.embeddings\.(?P<table>[^.]+)"
                         r"\.weight$")


def fused_optimizer(cfg: optimizer_pb2.SparseOptimizer) -> tuple[type, dict]:
    """(optimizer class, keyword arguments) of the fused optimizer for a SparseOptimizer (the
    fused kernels start every accumulator at 0: the validator refuses another
    initial_accumulator_value)."""
    which = cfg.WhichOneof("optimizer") or DEFAULT_SPARSE_OPTIMIZER
    sub = getattr(cfg, which)
    if which == "rowwise_adagrad_optimizer":
        from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

        return RowWiseAdagrad, {"lr": proto_float(sub.lr), "eps": proto_float(sub.eps)}
    if which == "adam_optimizer":
        return torch.optim.Adam, {"lr": proto_float(sub.lr), "betas": (proto_float(sub.beta1), proto_float(sub.beta2)),
                                  "eps": proto_float(sub.eps)}
    if which == "adagrad_optimizer":
        return torch.optim.Adagrad, {"lr": proto_float(sub.lr), "eps": proto_float(sub.eps)}
    if which == "sgd_optimizer":
        return torch.optim.SGD, {"lr": proto_float(sub.lr)}
    raise ValueError(f"train_config.sparse_optimizer.{which}: not available as a fused optimizer with "
                     "train_config.embedding_sharding, expected rowwise_adagrad, adam, adagrad or sgd")


def _plain_key(key: str) -> str | None:
    """``...embedding_group.tables.<t>.weight`` for a lookup's table key, else None."""
    match = _LOOKUP_KEY.match(key)
    return f"{match['prefix']}tables.{match['table']}.weight" if match else None


def _gather(value, all_ranks: bool) -> torch.Tensor | None:
    """The whole tensor of a ShardedTensor (on rank 0, or on every rank), or a plain tensor as is."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    if not isinstance(value, ShardedTensor):
        return value.detach().cpu()
    main = distributed.is_main()
    full = torch.zeros(value.size(), dtype=value.dtype) if main or all_ranks else None
    with distributed.comm_errors("gather of a sharded table"):
        value.gather(dst=0, out=full if main else None)
    if all_ranks:
        distributed.broadcast_(full)
    return full


def _local_pieces(value) -> list[tuple[tuple[slice, ...], torch.Tensor]]:
    """(index into the whole tensor, CPU copy) of each piece of a ShardedTensor this rank holds
    (a plain tensor: the whole of it)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    if not isinstance(value, ShardedTensor):
        return [(tuple(slice(0, n) for n in value.shape), value.detach().cpu())]
    return [(tuple(slice(o, o + n) for o, n in zip(s.metadata.shard_offsets, s.metadata.shard_sizes)),
             s.tensor.detach().cpu()) for s in value.local_shards()]


def _copy_into(value, full: torch.Tensor) -> None:
    """Copy the slices of ``full`` that this rank holds into a ShardedTensor (or a plain tensor)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with torch.no_grad():
        if not isinstance(value, ShardedTensor):
            value.copy_(full.to(value.device))
            return
        for shard in value.local_shards():
            index = tuple(slice(o, o + s) for o, s in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes))
            shard.tensor.copy_(full[index].to(shard.tensor.device))


class ShardedEmbeddings:
    """A model whose embedding tables are sharded by TorchRec for training.

    Args:
        model: the (unsharded) model, its checkpoint already loaded.
        train_config: sparse_optimizer (becomes the fused optimizer) and embedding_sharding.
        device: this rank's device.

    Attributes: ``dmp`` (the DistributedModelParallel to call in the training step),
    ``fused_optimizer`` (its KeyedOptimizer: learning rate and state), ``plan``,
    ``replicated_tables`` (the parameters of the tables planned data_parallel: not fused, the
    trainer updates them with the sparse optimizer's settings on dense gradients).
    """

    def __init__(self, model: nn.Module, train_config: train_pb2.TrainConfig, device: torch.device) -> None:
        require_torchrec()
        # TorchRec initialises the tables it allocates (then overwritten by the model's weights):
        # keep the caller's random stream, so a sharded run draws the same batches and dropout.
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            self._shard(model, train_config, device)

    def _shard(self, model: nn.Module, train_config: train_pb2.TrainConfig, device: torch.device) -> None:
        from torchrec.distributed.comm_ops import set_gradient_division
        from torchrec.distributed.embedding import EmbeddingCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
        from torchrec.distributed.planner.types import ParameterConstraints
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

        self.model, self.device = model, device
        self.groups = list(dict.fromkeys(m for m in model.modules() if isinstance(m, EmbeddingGroup)))
        sharding = train_config.embedding_sharding
        if device.type == "cpu" and ("row_wise" in sharding.sharding_types
                                     or any("row_wise" in t.sharding_types for t in sharding.tables)):
            raise ValueError("train_config.embedding_sharding: row_wise sharding needs CUDA (TorchRec offers "
                             "table_wise, column_wise and data_parallel on CPU)")
        distributed.ensure_process_group(device, train_config.process_group_timeout_seconds)
        plain = {}  # state_dict key of a lookup's table -> the weight to copy into its shards
        for group in self.groups:
            group.lookup = TorchRecLookup(group)
            for key, collection in group.lookup.collections.items():
                for table in collection.embeddings:
                    plain[(id(group), key, table)] = group.tables[table].weight.detach()
            group.tables = nn.ModuleDict()  # the collections hold the weights from here on
        optimizer_class, kwargs = fused_optimizer(train_config.sparse_optimizer)
        apply_optimizer_in_backward(optimizer_class, [p for g in self.groups for p in g.lookup.parameters()], kwargs)
        allowed = list(sharding.sharding_types) or [t for t in SHARDING_TYPES if t != "row_wise" or device.type == "cuda"]
        per_table = {t.table: list(t.sharding_types) for t in sharding.tables}
        constraints = {name: ParameterConstraints(sharding_types=per_table.get(name, allowed))
                       for g in self.groups for name in g.table_specs}
        planner = EmbeddingShardingPlanner(topology=Topology(world_size=distributed.world_size(),
                                                             compute_device=device.type), constraints=constraints)
        sharders = [EmbeddingCollectionSharder()]
        collection_paths = {id(c): path for path, c in model.named_modules()}
        with distributed.comm_errors("sharding plan"):
            self.plan = planner.collective_plan(model, sharders, torch.distributed.GroupMember.WORLD)
        replicated = set()  # (group, collection key, table) planned data_parallel
        for group in self.groups:
            for key, collection in group.lookup.collections.items():
                placements = self.plan.plan.get(collection_paths[id(collection)], {})
                for table, placement in placements.items():
                    if placement.sharding_type == "data_parallel":
                        replicated.add((id(group), key, table))
        # A sharded table's gradient reaches its shard through an all-to-all whose backward
        # divides by the world size: the mean over ranks, as DDP gives the dense parameters.
        set_gradient_division(True)
        with distributed.comm_errors("sharding"):
            self.dmp = DistributedModelParallel(model, device=device, plan=self.plan, sharders=sharders)
        for group in self.groups:  # each rank copies its shards' slices, then the whole tables go
            state = group.lookup.state_dict(keep_vars=True)
            for (group_id, key, table), weight in list(plain.items()):
                if group_id == id(group):
                    _copy_into(state[f"collections.{key}.embeddings.{table}.weight"], weight)
                    del plain[(group_id, key, table)]
        self.fused_optimizer = self.dmp.fused_optimizer
        self._weights = {_plain_key(k): v for k, v in model.state_dict().items() if _plain_key(k)}
        # Data-parallel tables are plain replicated parameters: the sparse optimizer's settings
        # train them with dense gradients (averaged by DDP), outside the fused kernels.
        self.replicated_tables = [
            collection.embeddings[table].weight for g in self.groups for key, collection in g.lookup.collections.items()
            for table in collection.embeddings if (id(g), key, table) in replicated]

    def dense_parameters(self) -> list[nn.Parameter]:
        """The parameters the dense optimizer trains (everything but the sharded tables)."""
        tables = {id(p) for g in self.groups for p in g.lookup.parameters()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in tables]

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The unsharded model's state_dict (tables gathered); on rank 0, None elsewhere.
        Every rank must call it (the gathers are collective)."""
        state = {}
        for key, value in self.model.state_dict().items():
            plain = _plain_key(key)
            full = _gather(value, all_ranks=False) if plain else value
            state[plain or key] = full
        return state if distributed.is_main() else None

    def optimizer_state_dict(self) -> dict | None:
        """The fused optimizer's state as whole tensors, keyed by table state_dict key and state
        name (its learning rate is the schedule's, saved with it); on rank 0, None elsewhere.
        Every rank must call it.

        A row-wise state (one float per row) of a column-wise sharded table is kept per column
        shard by TorchRec ((shards x rows,)); it is saved so, with the shards' widths
        (``column_widths``): it loads exactly into the same column split, and as the widths'
        weighted mean per row (what the unsharded table accumulates) into any other.
        """
        import torch.distributed as dist

        local = {}
        for key, entries in self.fused_optimizer.state_dict()["state"].items():
            for name, value in entries.items():
                local[(_plain_key(key) or key, name.split(".", 1)[-1])] = value
        with distributed.comm_errors("gather of the sharded optimizer state"):
            everyone = [None] * distributed.world_size()
            dist.all_gather_object(everyone, sorted(local))
            state: dict[str, dict[str, torch.Tensor]] = {}
            for table_key, name in sorted({tuple(k) for keys in everyone for k in keys}):
                value = local.get((table_key, name))
                mine = (tuple(value.size()), _local_pieces(value)) if value is not None else None
                pieces = [None] * distributed.world_size() if distributed.is_main() else None
                dist.gather_object(mine, pieces, dst=0)  # one table at a time: rank 0 holds one extra
                if distributed.is_main():
                    size = next(p[0] for p in pieces if p is not None)
                    full = torch.zeros(size, dtype=next(t for p in pieces if p for _, t in p[1]).dtype)
                    for piece in pieces:
                        for index, tensor in piece[1] if piece else ():
                            full[index] = tensor
                    entry = state.setdefault(table_key, {"column_widths": self._column_widths(table_key)})
                    entry[name] = full
        return {"state": state} if distributed.is_main() else None

    def _column_widths(self, table_key: str) -> list[int]:
        """The widths of a table's column shards, in column order ([dim] when not column-wise)."""
        from torch.distributed._shard.sharded_tensor import ShardedTensor

        weight = self._weights[table_key]
        if not isinstance(weight, ShardedTensor):
            return [weight.shape[1]]
        shards = sorted(weight.metadata().shards_metadata, key=lambda m: tuple(m.shard_offsets))
        return [m.shard_sizes[1] for m in shards if m.shard_offsets[0] == 0]

    def load_optimizer_state_dict(self, saved: dict) -> None:
        """Restore :meth:`optimizer_state_dict` into this run's shards (any world size or sharding)."""
        current = self.fused_optimizer.state_dict()
        for key, entries in current["state"].items():
            table_key = _plain_key(key) or key
            whole = saved["state"].get(table_key)
            if whole is None:
                raise ValueError(f"the checkpoint's sparse optimizer state has no table {table_key}")
            widths, rows = self._column_widths(table_key), self._weights[table_key].shape[0]
            for name, value in entries.items():
                state, size = whole[name.split(".", 1)[-1]], tuple(value.size())
                if state.dim() == 1 and whole["column_widths"] != widths and state.numel() % rows == 0:
                    # A row-wise state under another column split: per row, then one copy per shard.
                    saved_widths = torch.tensor(whole["column_widths"], dtype=state.dtype)
                    if state.numel() == rows * len(saved_widths):
                        state = (state.view(-1, rows) * saved_widths.unsqueeze(1)).sum(0) / saved_widths.sum()
                    if size[0] == rows * len(widths):
                        state = state.repeat(len(widths))
                if tuple(state.shape) != size:
                    raise ValueError(f"the checkpoint's sparse optimizer state {name} of {table_key} has shape "
                                     f"{tuple(state.shape)}, this run's {size}")
                _copy_into(value, state)

    @contextmanager
    def plain_tables(self) -> Iterator[None]:
        """Every rank holds the whole tables as plain ones for the block (evaluation), then
        only its shards again."""
        lookups = {}
        for group in self.groups:
            tables = nn.ModuleDict()
            for key, value in group.lookup.state_dict().items():
                name = key.split(".")[-2]
                tables[name] = nn.Embedding.from_pretrained(_gather(value, all_ranks=True).to(self.device), freeze=True)
            lookups[group] = group.lookup
            group.lookup, group.tables = None, tables
        try:
            yield
        finally:
            for group, lookup in lookups.items():
                group.lookup, group.tables = lookup, nn.ModuleDict()


__all__ = ["ShardedEmbeddings", "fused_optimizer"]
