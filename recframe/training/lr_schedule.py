"""Learning-rate schedules from the ``learning_rate`` oneof of an optimizer config.

Each schedule computes a multiplier ``factor(step)`` of the optimizer's base learning rate
(the ``lr`` of the optimizer message). ``step`` counts optimizer steps from 0: the update
made by the k-th ``optimizer.step()`` (k = 0, 1, ...) uses ``base_lr * factor(k)``, provided
the trainer calls ``scheduler.step()`` once right after each ``optimizer.step()``.

Warmup (all schedules): for ``step < warmup_steps`` the factor is
``(step + 1) / warmup_steps`` — linear from 0, so step 0 already trains with
``base_lr / warmup_steps`` and step ``warmup_steps - 1`` with the full base rate. With
``warmup_steps = 0`` there is no warmup. After warmup, ``t = step - warmup_steps``:

- ``ConstantLearningRate``: 1.
- ``ExponentialDecayLearningRate``: ``decay_rate ** (t / decay_steps)`` (the exponent is
  floored — ``t // decay_steps`` — when ``staircase``), and the resulting learning rate is
  never below ``min_learning_rate`` (an absolute learning rate, not a factor).
- ``CosineLearningRate``: from the base rate to ``min_learning_rate`` (absolute) along half a
  cosine over ``D`` steps, ``lr = min + (base - min) * (1 + cos(pi * t / D)) / 2``, then
  constant at ``min_learning_rate``. ``D = decay_steps``, or when ``decay_steps = 0``
  ``D = total_steps - warmup_steps`` (the rest of the run; at least 1).

An unset ``learning_rate`` oneof means ``ConstantLearningRate`` without warmup.

The classes are registered in :data:`recframe.registry.LR_SCHEDULES` under their config
message names.
"""

from __future__ import annotations

import math
from typing import Union

import torch

from recframe.protos import optimizer_pb2
from recframe.registry import LR_SCHEDULES
from recframe.training.optim import _DEFAULT_PATHS, proto_float

OptimizerConfig = Union[optimizer_pb2.SparseOptimizer, optimizer_pb2.DenseOptimizer]


class LearningRateSchedule:
    """Base class: a multiplier of the base learning rate as a function of the step."""

    def __init__(self, base_lr: float, warmup_steps: int = 0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps = {warmup_steps}: expected >= 0")
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (from 0)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.decay_factor(step - self.warmup_steps)

    def decay_factor(self, t: int) -> float:
        """Multiplier ``t`` steps after the end of warmup."""
        raise NotImplementedError

    def lr(self, step: int) -> float:
        """Absolute learning rate at ``step``."""
        return self.base_lr * self.factor(step)

    def __call__(self, step: int) -> float:
        return self.factor(step)

    def _min_ratio(self, min_learning_rate: float) -> float:
        if min_learning_rate < 0:
            raise ValueError(f"min_learning_rate = {min_learning_rate}: expected >= 0")
        if min_learning_rate > self.base_lr:
            raise ValueError(
                f"min_learning_rate = {min_learning_rate} is above the optimizer's "
                f"learning rate {self.base_lr}: expected min_learning_rate <= lr"
            )
        return min_learning_rate / self.base_lr if self.base_lr > 0 else 0.0


@LR_SCHEDULES.register()
class ConstantLearningRate(LearningRateSchedule):
    """The base learning rate, after an optional linear warmup."""

    def __init__(self, base_lr: float, warmup_steps: int = 0, total_steps: int | None = None) -> None:
        super().__init__(base_lr, warmup_steps)

    def decay_factor(self, t: int) -> float:
        return 1.0


@LR_SCHEDULES.register()
class ExponentialDecayLearningRate(LearningRateSchedule):
    """``base * decay_rate ** (t / decay_steps)``, floored at ``min_learning_rate``."""

    def __init__(
        self,
        base_lr: float,
        decay_steps: int = 1000,
        decay_rate: float = 0.95,
        staircase: bool = False,
        min_learning_rate: float = 0.0,
        warmup_steps: int = 0,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(base_lr, warmup_steps)
        if decay_steps <= 0:
            raise ValueError(f"decay_steps = {decay_steps}: expected > 0")
        if not 0.0 < decay_rate <= 1.0:
            raise ValueError(f"decay_rate = {decay_rate}: expected a value in (0, 1]")
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)
        self.min_learning_rate = float(min_learning_rate)
        self.min_ratio = self._min_ratio(self.min_learning_rate)

    def decay_factor(self, t: int) -> float:
        exponent = t // self.decay_steps if self.staircase else t / self.decay_steps
        return max(self.decay_rate**exponent, self.min_ratio)


@LR_SCHEDULES.register()
class CosineLearningRate(LearningRateSchedule):
    """Half-cosine from the base rate to ``min_learning_rate`` over ``decay_steps``."""

    def __init__(
        self,
        base_lr: float,
        decay_steps: int = 0,
        min_learning_rate: float = 0.0,
        warmup_steps: int = 0,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(base_lr, warmup_steps)
        if decay_steps < 0:
            raise ValueError(f"decay_steps = {decay_steps}: expected >= 0")
        if decay_steps == 0:
            if not total_steps or total_steps <= 0:
                raise ValueError(
                    "decay_steps = 0 means 'the rest of the run', but the number of "
                    "training steps is not known: set decay_steps, or train_config.num_steps"
                )
            decay_steps = max(1, int(total_steps) - self.warmup_steps)
        self.decay_steps = int(decay_steps)
        self.min_learning_rate = float(min_learning_rate)
        self.min_ratio = self._min_ratio(self.min_learning_rate)

    def decay_factor(self, t: int) -> float:
        progress = min(1.0, t / self.decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_from_config(
    cfg: OptimizerConfig | None,
    base_lr: float,
    total_steps: int | None = None,
    field_path: str | None = None,
) -> LearningRateSchedule:
    """The schedule of ``cfg``'s ``learning_rate`` oneof (unset: constant) for ``base_lr``.

    Raises ValueError naming the config field (``field_path``, default
    ``train_config.{sparse,dense}_optimizer``) when a value is out of range.
    """
    which = cfg.WhichOneof("learning_rate") if cfg is not None else None
    if which is None:
        return ConstantLearningRate(base_lr)
    path = field_path or _DEFAULT_PATHS.get(type(cfg).DESCRIPTOR.name, "optimizer")
    sub = getattr(cfg, which)
    kwargs: dict[str, object] = {}
    for field in sub.DESCRIPTOR.fields:
        value = getattr(sub, field.name)
        if field.type == field.TYPE_FLOAT:
            value = proto_float(value)
        kwargs[field.name] = value
    cls = LR_SCHEDULES.get(sub.DESCRIPTOR.name)
    try:
        return cls(base_lr=base_lr, total_steps=total_steps, **kwargs)
    except ValueError as e:
        raise ValueError(f"{path}.{which}.{e}") from None


class ScheduleLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` whose ``load_state_dict`` also puts the restored step's learning rate into
    the optimizer.

    (Plain ``LambdaLR.load_state_dict`` restores the step count only; if the optimizer's
    state was loaded *before* the scheduler was built, its param groups would keep the
    step-0 learning rate until the next ``scheduler.step()``, so the first step after a resume
    would use a wrong learning rate.)
    """

    def state_dict(self) -> dict:
        """LambdaLR's state without the schedule objects: the config defines the schedule."""
        state = super().state_dict()
        state.pop("schedules", None)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the step; the base learning rates and schedules are this run's config's (the
        number of param groups may differ: a sharded table's fused optimizer has one per local
        table)."""
        keep = {k: v for k, v in state_dict.items() if k not in ("base_lrs", "_last_lr", "lr_lambdas")}
        super().load_state_dict({**keep, "lr_lambdas": [None] * len(self.lr_lambdas)})
        step = max(self.last_epoch, 0)
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base_lr * fn(step)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: OptimizerConfig | None,
    total_steps: int | None = None,
    field_path: str | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` (:class:`ScheduleLambdaLR`) applying ``cfg``'s schedule to every param group of ``optimizer``.

    ``total_steps`` is the number of optimizer steps of the whole run (needed only by a cosine
    schedule with ``decay_steps = 0``; ``None`` when unknown). Each param group gets its own
    schedule over its own base learning rate (``min_learning_rate`` is absolute).

    Resuming: save ``scheduler.state_dict()`` and restore it with ``load_state_dict`` after
    building the scheduler from the (possibly edited) config; only the step count is
    restored — the schedule's parameters always come from the config — and the optimizer's
    learning rates are set to those of the restored step (whichever of the optimizer and the
    scheduler is loaded first).
    """
    groups = optimizer.param_groups
    schedules = [
        schedule_from_config(cfg, g.get("initial_lr", g["lr"]), total_steps, field_path) for g in groups
    ]
    # Plain functions (not callable objects): LambdaLR then keeps them out of its
    # state_dict, so the config, not the checkpoint, defines the schedule on resume.
    lambdas = [(lambda step, s=s: s.factor(step)) for s in schedules]
    scheduler = ScheduleLambdaLR(optimizer, lr_lambda=lambdas)
    scheduler.schedules = schedules  # type: ignore[attr-defined]  # for inspection / logging
    return scheduler


__all__ = [
    "LearningRateSchedule",
    "ConstantLearningRate",
    "ExponentialDecayLearningRate",
    "CosineLearningRate",
    "schedule_from_config",
    "ScheduleLambdaLR",
    "build_lr_scheduler",
]
