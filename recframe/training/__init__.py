"""Reusable pieces of the trainer: optimizers, lr schedules, checkpoints, run logs, plots.

matplotlib (``plots`` extra) and tensorboard (``tensorboard`` extra) are imported lazily,
only when used; without them the functions say so and carry on.
"""

from recframe.training.checkpoint import (
    CheckpointManager,
    ModelDirNotEmptyError,
    ensure_model_dir,
    load_checkpoint,
)
from recframe.training.lr_schedule import (
    ConstantLearningRate,
    CosineLearningRate,
    ExponentialDecayLearningRate,
    LearningRateSchedule,
    ScheduleLambdaLR,
    build_lr_scheduler,
    schedule_from_config,
)
from recframe.training.optim import build_optimizer, proto_float, split_sparse_dense
from recframe.training.plots import read_curves, write_curves
from recframe.training.run_log import ProgressBar, RunLogger

__all__ = [
    "CheckpointManager",
    "ConstantLearningRate",
    "CosineLearningRate",
    "ExponentialDecayLearningRate",
    "LearningRateSchedule",
    "ModelDirNotEmptyError",
    "ProgressBar",
    "RunLogger",
    "ScheduleLambdaLR",
    "build_lr_scheduler",
    "build_optimizer",
    "ensure_model_dir",
    "load_checkpoint",
    "proto_float",
    "read_curves",
    "schedule_from_config",
    "split_sparse_dense",
    "write_curves",
]
