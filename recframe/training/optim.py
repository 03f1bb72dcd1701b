"""Optimizers from ``SparseOptimizer`` / ``DenseOptimizer`` config messages.

The embedding tables of the features (every EmbeddingGroup's tables) are trained by
``train_config.sparse_optimizer``, every other parameter by ``train_config.dense_optimizer``
(see :func:`split_sparse_dense`).

Sparse gradients (``sparse_optimizer.dense_gradients`` false, the default): the tables are
``nn.Embedding(sparse=True)``, a step's gradient holds only the rows the batch looked up, and
the optimizer updates only those rows: ``rowwise_adagrad_optimizer``
(:class:`~recframe.training.rowwise_adagrad.RowWiseAdagrad`), ``adam_optimizer`` as lazy Adam
(``torch.optim.SparseAdam``), ``adagrad_optimizer`` and ``sgd_optimizer`` (torch's, which accept
sparse gradients). weight_decay, SGD momentum and AdamW need dense gradients.

Defaults: a ``DenseOptimizer`` whose ``optimizer`` oneof is unset means ``Adam(lr=0.001)``;
a ``SparseOptimizer`` whose oneof is unset means :data:`DEFAULT_SPARSE_OPTIMIZER`. Every field
of the chosen sub-message is passed to torch (nothing is ignored).

The proto's ``float`` fields are 32-bit: ``lr: 0.001`` is stored as 0.0010000000474974513.
:func:`proto_float` recovers the decimal the user wrote (the shortest decimal that rounds to
the same float32), so ``param_groups[0]["lr"] == 0.001`` exactly.

Each builder is registered in :data:`recframe.registry.OPTIMIZERS` under its config message
name as a function ``(params, message, field_path, sparse) -> torch.optim.Optimizer``.
"""

from __future__ import annotations

from typing import Iterable, Union

import numpy as np
import torch

from recframe.protos import optimizer_pb2
from recframe.registry import OPTIMIZERS
from recframe.training.rowwise_adagrad import RowWiseAdagrad

OptimizerConfig = Union[optimizer_pb2.SparseOptimizer, optimizer_pb2.DenseOptimizer]

#: The SparseOptimizer member used when its ``optimizer`` oneof is unset.
DEFAULT_SPARSE_OPTIMIZER = "rowwise_adagrad_optimizer"

_DEFAULT_PATHS = {
    "SparseOptimizer": "train_config.sparse_optimizer",
    "DenseOptimizer": "train_config.dense_optimizer",
}


def proto_float(value: float) -> float:
    """The decimal a user wrote for a proto ``float`` field (float32 -> shortest decimal).

    ``proto_float(np.float32(0.001)) == 0.001``.
    """
    return float(str(np.float32(value)))


def split_sparse_dense(
    model: torch.nn.Module,
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Split the trainable parameters of ``model`` into (sparse, dense).

    Sparse: the embedding tables of the features (``EmbeddingGroup.tables`` anywhere in the
    module tree). Dense: all the others (MLPs, projections, a sequence encoder's position
    embedding, ...). Each parameter appears exactly once (deduplicated by identity; a table
    shared by two towers once). Parameters with ``requires_grad=False`` are left out of both
    lists. Order follows ``model.parameters()``, so it is deterministic (optimizer state dicts
    rely on it).
    """
    from recframe.modules.embedding_group import EmbeddingGroup

    table_ids = {id(p) for m in model.modules() if isinstance(m, EmbeddingGroup) for p in m.tables.parameters()}
    sparse: list[torch.nn.Parameter] = []
    dense: list[torch.nn.Parameter] = []
    for p in model.parameters():  # already deduplicated by identity
        if p.requires_grad:
            (sparse if id(p) in table_ids else dense).append(p)
    return sparse, dense


def sparse_gradients(cfg: optimizer_pb2.SparseOptimizer | None) -> bool:
    """Whether the embedding tables get sparse gradients (the default)."""
    return cfg is None or not cfg.dense_gradients


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    cfg: OptimizerConfig | None,
    field_path: str | None = None,
    sparse: bool | None = None,
) -> torch.optim.Optimizer | None:
    """Build the torch optimizer that ``cfg`` describes, over ``params``.

    Args:
        params: the parameters to optimize (e.g. one half of :func:`split_sparse_dense`).
        cfg: a ``SparseOptimizer`` (its parameters get sparse gradients unless
            ``dense_gradients``) or a ``DenseOptimizer``; ``None`` means a DenseOptimizer. An
            unset ``optimizer`` oneof means the default of the message (module docstring).
        field_path: config path used in error messages; default
            ``train_config.sparse_optimizer`` / ``train_config.dense_optimizer`` by type.
        sparse: whether the parameters get sparse gradients; default: a SparseOptimizer's
            unless ``dense_gradients``, never a DenseOptimizer's.

    Returns:
        The optimizer, or ``None`` when ``params`` is empty (torch refuses empty lists).

    Raises:
        ValueError: a hyper-parameter out of range or unsupported, naming the config field.
    """
    params = list(params)
    if not params:
        return None
    if cfg is None:
        cfg = optimizer_pb2.DenseOptimizer()
    is_sparse_config = isinstance(cfg, optimizer_pb2.SparseOptimizer)
    path = field_path or _DEFAULT_PATHS.get(type(cfg).DESCRIPTOR.name, "optimizer")
    which = cfg.WhichOneof("optimizer") or (DEFAULT_SPARSE_OPTIMIZER if is_sparse_config else "adam_optimizer")
    sub = getattr(cfg, which)
    builder = OPTIMIZERS.get(type(sub).DESCRIPTOR.name)
    if sparse is None:
        sparse = is_sparse_config and sparse_gradients(cfg)
    return builder(params, sub, f"{path}.{which}", sparse)


def _check(ok: bool, path: str, field: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"{path}.{field} = {value!r}: expected {expected}")


def _lr_eps_decay(sub, path: str, sparse: bool) -> dict[str, float]:
    """lr, eps and weight_decay of a message (each checked); weight_decay 0 with sparse gradients."""
    kw = {"lr": proto_float(sub.lr), "eps": proto_float(sub.eps), "weight_decay": proto_float(sub.weight_decay)}
    _check(kw["lr"] >= 0.0, path, "lr", kw["lr"], "a learning rate >= 0")
    _check(kw["eps"] >= 0.0, path, "eps", kw["eps"], ">= 0")
    _check(kw["weight_decay"] >= 0.0, path, "weight_decay", kw["weight_decay"], ">= 0")
    if sparse:
        _check(kw["weight_decay"] == 0.0, path, "weight_decay", kw["weight_decay"],
               "0 with sparse embedding gradients (or sparse_optimizer.dense_gradients: true)")
    return kw


def _betas(sub, path: str) -> tuple[float, float]:
    b1, b2 = proto_float(sub.beta1), proto_float(sub.beta2)
    _check(0.0 <= b1 < 1.0, path, "beta1", b1, "a value in [0, 1)")
    _check(0.0 <= b2 < 1.0, path, "beta2", b2, "a value in [0, 1)")
    return b1, b2


@OPTIMIZERS.register("AdamOptimizer")
def _adam(params: list[torch.nn.Parameter], sub, path: str, sparse: bool = False) -> torch.optim.Optimizer:
    kw = _lr_eps_decay(sub, path, sparse)
    betas = _betas(sub, path)
    if sparse:  # lazy Adam: a row's moments move only at the steps that look the row up
        return torch.optim.SparseAdam(params, lr=kw["lr"], betas=betas, eps=kw["eps"])
    return torch.optim.Adam(params, betas=betas, **kw)


@OPTIMIZERS.register("AdamWOptimizer")
def _adamw(params: list[torch.nn.Parameter], sub, path: str, sparse: bool = False) -> torch.optim.Optimizer:
    if sparse:
        raise ValueError(f"{path}: AdamW needs dense gradients, expected sparse_optimizer.dense_gradients: true "
                         "or another optimizer")
    return torch.optim.AdamW(params, betas=_betas(sub, path), **_lr_eps_decay(sub, path, sparse))


@OPTIMIZERS.register("AdagradOptimizer")
def _adagrad(params: list[torch.nn.Parameter], sub, path: str, sparse: bool = False) -> torch.optim.Optimizer:
    kw = _lr_eps_decay(sub, path, sparse)
    v = proto_float(sub.initial_accumulator_value)
    _check(v >= 0.0, path, "initial_accumulator_value", v, ">= 0")
    return torch.optim.Adagrad(params, initial_accumulator_value=v, **kw)


@OPTIMIZERS.register("SGDOptimizer")
def _sgd(params: list[torch.nn.Parameter], sub, path: str, sparse: bool = False) -> torch.optim.Optimizer:
    lr, momentum, decay = proto_float(sub.lr), proto_float(sub.momentum), proto_float(sub.weight_decay)
    _check(lr >= 0.0, path, "lr", lr, "a learning rate >= 0")
    _check(decay >= 0.0, path, "weight_decay", decay, ">= 0")
    _check(momentum >= 0.0, path, "momentum", momentum, ">= 0")
    if sub.nesterov:
        _check(momentum > 0.0, path, "nesterov", True, "momentum > 0 with nesterov: true")
    if sparse:
        for name, value in (("momentum", momentum), ("weight_decay", decay)):
            _check(value == 0.0, path, name, value,
                   "0 with sparse embedding gradients (or sparse_optimizer.dense_gradients: true)")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay, nesterov=bool(sub.nesterov))


@OPTIMIZERS.register("RowWiseAdagradOptimizer")
def _rowwise_adagrad(params: list[torch.nn.Parameter], sub, path: str, sparse: bool = False) -> torch.optim.Optimizer:
    lr, eps, v = proto_float(sub.lr), proto_float(sub.eps), proto_float(sub.initial_accumulator_value)
    _check(lr >= 0.0, path, "lr", lr, "a learning rate >= 0")
    _check(v >= 0.0, path, "initial_accumulator_value", v, ">= 0")
    return RowWiseAdagrad(params, lr=lr, eps=eps, initial_accumulator_value=v)


def clip_grad_norm_(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``params`` so that their global L2 norm is at most ``max_norm``;
    returns the norm before clipping. Sparse gradients count their (coalesced) values, so a row
    looked up twice counts once with the sum of its gradients, as a dense gradient would."""
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad.values())
        else:
            grads.append(p.grad)
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


__all__ = [
    "DEFAULT_SPARSE_OPTIMIZER",
    "OptimizerConfig",
    "build_optimizer",
    "clip_grad_norm_",
    "proto_float",
    "sparse_gradients",
    "split_sparse_dense",
]
