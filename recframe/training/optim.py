"""Optimizers from ``SparseOptimizer`` / ``DenseOptimizer`` config messages.

Embedding tables (parameters of ``torch.nn.Embedding`` / ``torch.nn.EmbeddingBag``) are
trained by ``train_config.sparse_optimizer``, every other parameter by
``train_config.dense_optimizer`` (see :func:`split_sparse_dense`).

Defaults:

- an optimizer message whose ``optimizer`` oneof is unset means ``Adam(lr=0.001)`` with
  torch's other Adam defaults (betas (0.9, 0.999), eps 1e-8, weight_decay 0), i.e. exactly an
  empty ``adam_optimizer {}``;
- every field of the chosen sub-message is passed to torch (nothing is ignored).

The proto's ``float`` fields are 32-bit: ``lr: 0.001`` is stored as 0.0010000000474974513.
:func:`proto_float` recovers the decimal the user wrote (the shortest decimal that rounds to
the same float32), so ``param_groups[0]["lr"] == 0.001`` exactly.

Each builder is registered in :data:`recframe.registry.OPTIMIZERS` under its config message
name (``AdamOptimizer``, ``AdamWOptimizer``, ``AdagradOptimizer``, ``SGDOptimizer``) as a
function ``(params, cfg, field_path) -> torch.optim.Optimizer``.
"""

from __future__ import annotations

from typing import Iterable, Union

import numpy as np
import torch

from recframe.protos import optimizer_pb2
from recframe.registry import OPTIMIZERS

OptimizerConfig = Union[optimizer_pb2.SparseOptimizer, optimizer_pb2.DenseOptimizer]

#: Embedding-like modules whose parameters go to the sparse optimizer.
SPARSE_MODULE_TYPES: tuple[type[torch.nn.Module], ...] = (torch.nn.Embedding, torch.nn.EmbeddingBag)

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

    Sparse: parameters owned by a ``torch.nn.Embedding`` or ``torch.nn.EmbeddingBag``
    (anywhere in the module tree). Dense: all the others. Each parameter appears exactly once
    (deduplicated by identity); a parameter shared between an embedding and another module
    (e.g. tied input/output embeddings) counts as sparse. Parameters with
    ``requires_grad=False`` are left out of both lists. Order follows
    ``model.parameters()``, so it is deterministic (optimizer state dicts rely on it).
    """
    sparse_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, SPARSE_MODULE_TYPES):
            sparse_ids.update(id(p) for p in module.parameters(recurse=False))
    sparse: list[torch.nn.Parameter] = []
    dense: list[torch.nn.Parameter] = []
    for p in model.parameters():  # already deduplicated by identity
        if not p.requires_grad:
            continue
        (sparse if id(p) in sparse_ids else dense).append(p)
    return sparse, dense


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    cfg: OptimizerConfig | None,
    field_path: str | None = None,
) -> torch.optim.Optimizer | None:
    """Build the torch optimizer that ``cfg`` describes, over ``params``.

    Args:
        params: the parameters to optimize (e.g. one half of :func:`split_sparse_dense`).
        cfg: a ``SparseOptimizer`` or ``DenseOptimizer`` message; ``None`` or an unset
            ``optimizer`` oneof means ``Adam(lr=0.001)``.
        field_path: config path used in error messages; default
            ``train_config.sparse_optimizer`` / ``train_config.dense_optimizer`` by type.

    Returns:
        The optimizer, or ``None`` when ``params`` is empty (torch refuses empty lists).

    Raises:
        ValueError: a hyper-parameter out of range, naming the config field.
    """
    params = list(params)
    if not params:
        return None
    if cfg is None:
        cfg = optimizer_pb2.DenseOptimizer()
    path = field_path or _DEFAULT_PATHS.get(type(cfg).DESCRIPTOR.name, "optimizer")
    which = cfg.WhichOneof("optimizer")
    if which is None:
        sub = optimizer_pb2.AdamOptimizer()
        which = "adam_optimizer"
    else:
        sub = getattr(cfg, which)
    builder = OPTIMIZERS.get(type(sub).DESCRIPTOR.name)
    return builder(params, sub, f"{path}.{which}")


def optimizer_hparams(sub) -> dict[str, object]:
    """The torch keyword arguments for one optimizer sub-message (floats de-float32'd)."""
    name = type(sub).DESCRIPTOR.name
    if name in ("AdamOptimizer", "AdamWOptimizer"):
        return {
            "lr": proto_float(sub.lr),
            "betas": (proto_float(sub.beta1), proto_float(sub.beta2)),
            "eps": proto_float(sub.eps),
            "weight_decay": proto_float(sub.weight_decay),
        }
    if name == "AdagradOptimizer":
        return {
            "lr": proto_float(sub.lr),
            "initial_accumulator_value": proto_float(sub.initial_accumulator_value),
            "eps": proto_float(sub.eps),
            "weight_decay": proto_float(sub.weight_decay),
        }
    if name == "SGDOptimizer":
        return {
            "lr": proto_float(sub.lr),
            "momentum": proto_float(sub.momentum),
            "weight_decay": proto_float(sub.weight_decay),
            "nesterov": bool(sub.nesterov),
        }
    raise ValueError(f"no hyper-parameter mapping for optimizer message {name}")


def _check(ok: bool, path: str, field: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"{path}.{field} = {value!r}: expected {expected}")


def _check_common(kw: dict[str, object], path: str) -> None:
    _check(kw["lr"] >= 0.0, path, "lr", kw["lr"], "a learning rate >= 0")
    _check(kw["weight_decay"] >= 0.0, path, "weight_decay", kw["weight_decay"], ">= 0")
    if "eps" in kw:
        _check(kw["eps"] >= 0.0, path, "eps", kw["eps"], ">= 0")
    if "betas" in kw:
        b1, b2 = kw["betas"]
        _check(0.0 <= b1 < 1.0, path, "beta1", b1, "a value in [0, 1)")
        _check(0.0 <= b2 < 1.0, path, "beta2", b2, "a value in [0, 1)")


@OPTIMIZERS.register("AdamOptimizer")
def _adam(params: list[torch.nn.Parameter], sub, path: str) -> torch.optim.Optimizer:
    kw = optimizer_hparams(sub)
    _check_common(kw, path)
    return torch.optim.Adam(params, **kw)


@OPTIMIZERS.register("AdamWOptimizer")
def _adamw(params: list[torch.nn.Parameter], sub, path: str) -> torch.optim.Optimizer:
    kw = optimizer_hparams(sub)
    _check_common(kw, path)
    return torch.optim.AdamW(params, **kw)


@OPTIMIZERS.register("AdagradOptimizer")
def _adagrad(params: list[torch.nn.Parameter], sub, path: str) -> torch.optim.Optimizer:
    kw = optimizer_hparams(sub)
    _check_common(kw, path)
    v = kw["initial_accumulator_value"]
    _check(v >= 0.0, path, "initial_accumulator_value", v, ">= 0")
    return torch.optim.Adagrad(params, **kw)


@OPTIMIZERS.register("SGDOptimizer")
def _sgd(params: list[torch.nn.Parameter], sub, path: str) -> torch.optim.Optimizer:
    kw = optimizer_hparams(sub)
    _check_common(kw, path)
    _check(kw["momentum"] >= 0.0, path, "momentum", kw["momentum"], ">= 0")
    if kw["nesterov"]:
        _check(kw["momentum"] > 0.0, path, "nesterov", True, "momentum > 0 with nesterov: true")
    return torch.optim.SGD(params, **kw)


__all__ = [
    "OptimizerConfig",
    "SPARSE_MODULE_TYPES",
    "build_optimizer",
    "optimizer_hparams",
    "proto_float",
    "split_sparse_dense",
]
