"""The training recipe: train, evaluate full-corpus, checkpoint, resume, stop early, test.

:class:`TrainRecipe` is ``setup`` / ``load_checkpoint`` / ``train`` / ``evaluate`` / ``save`` /
``test`` / ``cleanup`` around one :class:`TrainState`; :meth:`TrainRecipe.train` is the loop,
top to bottom. :func:`train_and_evaluate` runs it all.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from recframe import distributed
from recframe.config import ConfigError, check_paths_for, format_pipeline_config, save_pipeline_config
from recframe.data import DataError, create_dataloader
from recframe.data.preflight import check_inputs
from recframe.device import resolve_device
from recframe.errors import RecframeError
from recframe.files import atomic_write
from recframe.metrics.table import format_metrics_table
from recframe.pipeline import Pipeline
from recframe.modules.embedding_group import EmbeddingGroup
from recframe.recipes.evaluate import QueryRanks, evaluate_model
from recframe.training.checkpoint import (CheckpointManager, check_model_dir, ensure_model_dir, load_checkpoint,
                                         load_model_state, resolve_warm_start, warm_start)
from recframe.training.lr_schedule import build_lr_scheduler
from recframe.training.optim import build_optimizer, clip_grad_norm_, split_sparse_dense
from recframe.training.plots import write_curves, write_test_plots
from recframe.training.report import closing_line, count_parameters, start_banner, test_analysis
from recframe.training.run_log import ProgressBar, RunLogger
from recframe.training.sharding import ShardedEmbeddings


class NonFiniteLossError(RecframeError, FloatingPointError):
    """The training loss became NaN or infinite; no checkpoint of the diverged model is written."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training, after a checkpoint of the last finished step was saved."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (parameters and dropout)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random stream a run draws from: Python, NumPy, torch's CPU generator and, when
    CUDA is in use, every CUDA device's generator (all as CPU tensors)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s streams, whatever device the checkpoint was written or
    loaded on: torch wants CPU byte tensors; CUDA states restore on as many devices as both
    runs have (a checkpoint written on GPU resumes on CPU, the CPU streams restored)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    saved_cuda = state.get("cuda") or []
    if saved_cuda and torch.cuda.is_available():
        for index, cuda_state in enumerate(saved_cuda[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.to("cpu", torch.uint8), index)


class EarlyStopping:
    """Counts evaluations without improvement of a metric (higher is better)."""

    def __init__(self, metric: str, patience: int, min_delta: float) -> None:
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best = -math.inf
        self.bad_evals = 0

    def update(self, metrics: dict[str, float]) -> bool:
        """Record one evaluation; True when training should stop."""
        value = metrics[self.metric]
        if value > self.best + self.min_delta:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience


class _Quiet:
    """Stands in for the RunLogger and ProgressBar on ranks other than 0."""

    def log(self, record: dict) -> dict:
        return record

    def update(self, *args, **kwargs) -> None:
        return None

    def write(self, message: str) -> None:
        return None

    def close(self) -> None:
        return None


def epoch_of_step(step: int, epoch: int, batches_done: int) -> int:
    """The (0-based) epoch that ``step`` ran in, as train records count it.

    ``epoch`` / ``batches_done`` are the loop's position after the step: at an epoch end the
    loop has already moved to the next epoch (batches_done 0), so the step belongs to the
    previous one.
    """
    return epoch - 1 if batches_done == 0 and step > 0 and epoch > 0 else epoch


def steps_in_epoch(dataset, num_workers: int, world_size: int) -> int:
    """Batches every rank runs per epoch: the smallest rank's count.

    Ranks may read up to ``num_workers`` batches more than others when the rows do not split
    evenly; every rank stops after the smallest count so that all of them run the same number
    of steps (the extra last batches of the larger ranks are left out of that epoch).
    """
    if world_size <= 1:
        return dataset.num_batches(num_workers)
    workers = max(int(num_workers), 1)
    counts = dataset.reader.reader_num_batches(world_size * workers)
    return min(sum(counts[r * workers:(r + 1) * workers]) for r in range(world_size))


def autocast(device: torch.device, mixed_precision: str):
    """The autocast context of train_config.mixed_precision ("none", "bf16", "fp16") on ``device``."""
    if mixed_precision in ("", "none"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def data_identity(config, paths: list[str]) -> dict:
    """What a saved data position depends on: the batch size, the seed (the shuffle order),
    gradient accumulation, and the training files (path and size)."""
    return {"batch_size": int(config.data_config.batch_size), "seed": int(config.train_config.seed),
            "gradient_accumulation_steps": max(int(config.train_config.gradient_accumulation_steps), 1),
            "train_files": [[os.path.abspath(p), os.path.getsize(p)] for p in paths]}


def identity_changes(saved: dict, current: dict) -> list[str]:
    """The settings of :func:`data_identity` that differ, as readable phrases."""
    changes = []
    for key in ("batch_size", "seed", "gradient_accumulation_steps"):
        if key in saved and saved[key] != current[key]:
            changes.append(f"{key} {saved[key]} -> {current[key]}")
    if "train_files" in saved:
        before = {path: size for path, size in saved["train_files"]}
        now = {path: size for path, size in current["train_files"]}
        if before != now:
            added = sorted(set(now) - set(before))
            removed = sorted(set(before) - set(now))
            resized = sorted(p for p in set(now) & set(before) if now[p] != before[p])
            parts = ([f"added {added[:3]}"] if added else []) + ([f"removed {removed[:3]}"] if removed else [])
            parts += [f"{p} changed size ({before[p]} -> {now[p]} bytes)" for p in resized[:3]]
            changes.append("training files " + ", ".join(parts))
    return changes


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint and restored by ``--continue_train``.

    ``step`` counts optimizer steps; ``epoch`` / ``batches_done`` are the data position (the
    loop moves to the next epoch as soon as one ends); ``last_metrics`` are the evaluation
    metrics of ``last_eval_step``; ``loss_window`` the partial log window (summed loss,
    steps), so a resumed run writes the same first record.
    """

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    best_value: float = -math.inf
    last_metrics: dict = field(default_factory=dict)
    last_eval_step: int = -1
    loss_window: tuple[float, int] = (0.0, 0)


class TrainRecipe:
    """Trains the pipeline's model, evaluating and checkpointing as configured.

    Writes to ``model_dir``: ``pipeline.config`` (resolved), ``checkpoints/``, ``log.jsonl``
    (train, eval, test records; with variational dropout, feature_importance records: each
    feature's keep probability at log steps and evaluations), ``tensorboard/``,
    ``eval_result.json``, ``loss.png`` and ``eval_metrics.png``. Under
    torchrun (WORLD_SIZE > 1) every rank runs it (docs/distributed.md); rank 0 writes
    everything; a failed collective raises :class:`~recframe.distributed.DistributedError`.
    """

    def __init__(self, pipeline: Pipeline, model_dir: str, continue_train: bool = False,
                 device_name: str | None = None, restart_epoch: bool = False) -> None:
        self.pipeline, self.config = pipeline, pipeline.config
        self.model_dir, self.continue_train, self.device_name = model_dir, continue_train, device_name
        self.restart_epoch = restart_epoch
        self.interrupt_requested = False
        self.state = TrainState()

    # ---- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Device and process group, model_dir, data, model, optimizers, logs."""
        config, pipeline = self.config, self.pipeline
        train_config = config.train_config
        device = resolve_device(self.device_name or train_config.device,
                                "--device" if self.device_name else "train_config.device")
        self.device = distributed.setup(device, train_config.process_group_timeout_seconds)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.mixed_precision = train_config.mixed_precision or "none"
        if self.mixed_precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"{pipeline.source}: train_config.mixed_precision: fp16 on device {self.device}, "
                              "expected CUDA (or bf16 / none on CPU)")
        # Pre-flight: everything is opened, checked and built before model_dir is touched, so a
        # failed start leaves no run behind (and the same command works once the input is fixed).
        problems = check_paths_for(config, pipeline.source, ("train", "eval", "item"))
        if problems:
            raise ConfigError(f"{pipeline.source}: " + "; ".join(problems))
        warm_source = resolve_warm_start(train_config.fine_tune_checkpoint) if train_config.fine_tune_checkpoint else ""
        check_model_dir(self.model_dir, self.continue_train)
        seed_everything(train_config.seed)
        if self.main:
            pipeline.prepare_data()
        distributed.barrier()
        if not self.main:
            pipeline.prepare_data()  # a manifest check where rank 0's tables are visible
        pipeline.check_input_paths()

        # Data: every feature is parsed inside the DataLoader workers. Each rank reads its shard.
        parser = pipeline.train_parser()
        self.dataset = pipeline.dataset(config.train_input_path, parser.columns(), parser, seed=train_config.seed,
                                        rank=self.rank, world_size=self.world_size)
        self.inputs = check_inputs(pipeline, self.dataset, parser)
        self.num_workers = pipeline.data_config.num_workers
        self.accumulation = max(int(train_config.gradient_accumulation_steps), 1)
        self.batches_per_epoch = steps_in_epoch(self.dataset, self.num_workers, self.world_size)  # micro-batches
        if self.batches_per_epoch == 0:
            raise DataError(f"train_input_path: {config.train_input_path!r} has {self.inputs.train_rows} row(s): no "
                            f"full batch of data_config.batch_size {pipeline.data_config.batch_size}"
                            f"{' per rank' if self.world_size > 1 else ''} (drop_remainder is "
                            f"{pipeline.data_config.drop_remainder}); expected more rows or a smaller batch_size")
        steps_per_epoch = -(-self.batches_per_epoch // self.accumulation)  # optimizer steps
        self.total_steps = train_config.num_epochs * steps_per_epoch
        if train_config.num_steps:
            self.total_steps = min(self.total_steps, train_config.num_steps)
        self.data_identity = data_identity(config, self.dataset.paths)

        # Model: a checkpoint's weights are loaded before the model is wrapped (DDP broadcasts rank
        # 0's parameters; TorchRec shards the loaded tables).
        self.model = pipeline.build_model().to(self.device)
        saved, self.resume_path = None, None
        if self.continue_train:
            # On the CPU: the RNG states must be CPU tensors, and the weights are copied into
            # the model's devices anyway (a checkpoint written on GPU loads on CPU and back).
            found = CheckpointManager(self.model_dir, read_only=True).load_resumable(map_location="cpu")
            if found is not None:
                self.resume_path, saved = found
        self.warm_start_report = None
        if warm_source and saved is None:
            self.warm_start_report = warm_start(self.model, load_checkpoint(warm_source, map_location="cpu")["model"],
                                                warm_source)
        if saved is not None:
            load_model_state(self.model, saved, self.resume_path)
        if train_config.compile:
            # In place (nn.Module.compile): the state_dict keys stay those of the plain model.
            for tower in (self.model.user_tower, self.model.item_tower):
                tower.compile(mode=train_config.compile_mode)
        self.sharded = None
        if train_config.HasField("embedding_sharding"):
            self.sharded = ShardedEmbeddings(self.model, train_config, self.device)
            sparse_params, dense_params = [], self.sharded.dense_parameters()
        else:
            sparse_params, dense_params = split_sparse_dense(self.model)
        # Optimizers: the embedding tables get the sparse one (fused into the backward pass when
        # sharded), the other parameters the dense one.
        self.optimizers, self.schedulers = {}, {}
        groups = [("sparse", sparse_params, train_config.sparse_optimizer, None),
                  ("dense", dense_params, train_config.dense_optimizer, None)]
        if self.sharded:  # the tables planned data_parallel: replicated, dense gradients
            groups.append(("sparse_replicated", self.sharded.replicated_tables, train_config.sparse_optimizer, False))
        for name, params, cfg, sparse in groups:
            optimizer = (self.sharded.fused_optimizer if name == "sparse" and self.sharded
                         else build_optimizer(params, cfg, sparse=sparse))
            if optimizer is not None:
                self.optimizers[name] = optimizer
                self.schedulers[name] = build_lr_scheduler(optimizer, cfg, self.total_steps)
        if self.sharded:
            self.optimizers["sparse"].step()  # hands the schedule's first learning rate to the fused kernels
        self.scaler = torch.amp.GradScaler(self.device.type) if self.mixed_precision == "fp16" else None
        self.stopper = None
        if config.eval_config.HasField("early_stopping"):
            es = config.eval_config.early_stopping
            self.stopper = EarlyStopping(es.metric, es.patience, es.min_delta)
        self.resume_rng = None  # RNG state to restore once the resumed epoch's DataLoader iterator exists
        self.pending_loss: tuple = (0.0, 0)  # (summed step losses on the device, steps) not yet in loss_window
        self.importance_step = -1  # the step of the last feature_importance record
        if saved is not None:
            self.load_checkpoint(saved)
        # Pre-flight passed: only now is model_dir created and the resolved config written (a
        # refused --continue_train leaves the run's pipeline.config as it was).
        distributed.barrier()  # every rank checked model_dir before rank 0 writes into it
        if self.main:
            ensure_model_dir(self.model_dir, self.continue_train)
            save_pipeline_config(config, os.path.join(self.model_dir, "pipeline.config"))
        distributed.barrier()
        self.checkpoints = CheckpointManager(self.model_dir, train_config.keep_checkpoint_max)
        # DDP (or TorchRec's DMP, which wraps the dense part in DDP) after loading. DDP averages
        # the dense gradients; the tables' sparse gradients are averaged by hand before each step
        # (NCCL has no sparse all-reduce), so DDP leaves them alone.
        self.train_model = self.sharded.dmp if self.sharded else self.model
        self.synced_sparse = []
        if self.world_size > 1 and not self.sharded:
            if self.model.sparse_embeddings:
                self.synced_sparse = sparse_params
                tables = {id(p) for p in sparse_params}
                ignored = [n for n, p in self.model.named_parameters() if id(p) in tables]
                torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                    self.model, ignored)
                for p in sparse_params:  # DDP does not broadcast them: every rank starts from rank 0's
                    distributed.broadcast_(p.data)
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=None)
        self.logger = RunLogger(self.model_dir) if self.main else _Quiet()
        if self.main:
            self.logger.log_text("config", format_pipeline_config(config))
            print(start_banner(
                source=pipeline.source, model_dir=self.model_dir, device=self.device, world_size=self.world_size,
                model_name=type(self.model).__name__,
                parameters=count_parameters(self.model, [p for g in self.model.modules()
                                                         if isinstance(g, EmbeddingGroup) for p in g.tables.parameters()]),
                rows=getattr(self.dataset.reader, "num_rows", None), batch_size=pipeline.data_config.batch_size,
                steps_per_epoch=self.batches_per_epoch // self.accumulation, epochs=train_config.num_epochs,
                total_steps=self.total_steps, start_step=self.state.step, eval_path=config.eval_input_path),
                flush=True)
        if self.warm_start_report is not None:
            report = self.warm_start_report
            if self.main:
                print("\n".join(report.lines()), flush=True)
            self.logger.log({"type": "warm_start", "source": report.source, "loaded": report.loaded,
                             "partial": report.partial, "skipped": report.skipped, "unused": report.unused})
        self.progress = (ProgressBar(self.total_steps, train_config.log_step_count_steps, initial=self.state.step)
                         if self.main else _Quiet())

    def load_checkpoint(self, saved: dict) -> None:
        """Restore a checkpoint's optimizers, schedules, state and RNG (its parameters are
        loaded before the model is wrapped)."""
        sharded_state = saved.get("sharded_embeddings", False)
        if sharded_state != bool(self.sharded):
            raise ConfigError(
                f"{self.pipeline.source}: train_config.embedding_sharding: the checkpoint "
                f"{self.resume_path} was written {'with' if sharded_state else 'without'} it, and its "
                "sparse optimizer state does not carry over; resume with the same setting (evaluate and export "
                "read either)")
        for name, optimizer in self.optimizers.items():
            if name == "sparse" and self.sharded:
                try:
                    self.sharded.load_optimizer_state_dict(saved["optimizers"][name])
                except ValueError as e:
                    raise ConfigError(f"{self.resume_path}: {e}") from e
            else:
                optimizer.load_state_dict(saved["optimizers"][name])
            self.schedulers[name].load_state_dict(saved["schedulers"][name])
        if self.sharded:
            self.optimizers["sparse"].step()  # the restored step's learning rate to the fused kernels
        if self.scaler is not None and saved.get("grad_scaler"):
            self.scaler.load_state_dict(saved["grad_scaler"])
        self.state = TrainState(**{**saved["state"], "loss_window": tuple(saved["state"]["loss_window"])})
        if self.stopper is not None:
            self.stopper.best, self.stopper.bad_evals = saved["early_stopping"]
        state, latest = self.state, self.resume_path
        saved_workers, saved_world = saved.get("num_workers"), saved.get("world_size", 1)
        restart_epoch = False
        changes = identity_changes(saved.get("data", {}), self.data_identity)
        # (With another number of ranks a mid-epoch position restarts its epoch anyway, below.)
        if changes and state.batches_done and not self.restart_epoch and saved_world == self.world_size:
            raise ConfigError(
                f"{self.pipeline.source}: --continue_train: the checkpoint {latest} was saved in the middle of epoch "
                f"{state.epoch}, and what its data position depends on changed ({'; '.join(changes)}); restore "
                "them, or pass --restart_epoch to restart that epoch from its first batch (step count kept)")
        if changes and self.main and saved_world == self.world_size:
            print(f"warning: resuming from {latest} after changes to the data ({'; '.join(changes)})"
                  + (f": epoch {state.epoch} restarts from its first batch" if state.batches_done else
                     " at an epoch boundary"), flush=True)
        if changes and state.batches_done and saved_world == self.world_size:
            restart_epoch = True
        elif state.batches_done and saved_world != self.world_size:
            # Rows are split among the ranks: the saved position means other rows now.
            restart_epoch = True
            if self.main:
                print(f"warning: the checkpoint {latest} was saved in the middle of epoch {state.epoch} by "
                      f"{saved_world} process(es); resuming with {self.world_size} restarts that epoch from its first "
                      f"batch (step {state.step} is kept)")
        elif (state.batches_done and saved_workers is not None
              and max(saved_workers, 1) != max(self.num_workers, 1)):
            # Rows are split among the workers: another number of them would replay other rows.
            raise ConfigError(
                f"{self.pipeline.source}: data_config.num_workers: {self.num_workers}, but the checkpoint {latest} was "
                f"saved in the middle of an epoch with num_workers = {saved_workers}; resume with the same value")
        if restart_epoch:
            state.batches_done = 0
            set_rng_state(saved["rng"])
        elif state.batches_done:
            # Mid-epoch: the interrupted run saved its RNG state after iter(DataLoader) had drawn
            # its base seed from torch's RNG; the resumed iterator draws one more, so restore after.
            self.resume_rng = saved["rng"]
        else:
            set_rng_state(saved["rng"])
        if self.main:
            print(f"resumed from {latest} at step {state.step} (epoch {state.epoch}, batch {state.batches_done})")

    # ---- checkpoints and evaluation -----------------------------------------------------------

    def save(self, is_best: bool = False) -> None:
        """Write a checkpoint of the current step (rank 0; every rank calls it: sharded tables are
        gathered)."""
        self._fold_pending_loss()
        # The unwrapped model's state_dict, tables whole: the same keys whatever the world size.
        model_state = self.sharded.state_dict() if self.sharded else self.model.state_dict()
        optimizer_states = {n: self.sharded.optimizer_state_dict() if n == "sparse" and self.sharded
                            else o.state_dict() for n, o in self.optimizers.items()}
        if not self.main:
            return
        self.checkpoints.save(self.state.step, {
            "model": model_state,
            "optimizers": optimizer_states,
            "sharded_embeddings": bool(self.sharded),
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "state": asdict(self.state),
            "early_stopping": (self.stopper.best, self.stopper.bad_evals) if self.stopper else None,
            "rng": rng_state(),
            "num_workers": self.num_workers,  # a mid-epoch data position is only valid with the same value
            "world_size": self.world_size,  # ... and with the same number of ranks
            "data": self.data_identity,  # ... and with the same batch size, seed and files
            # For readers of the checkpoint (test, export): the step and data position.
            "step": self.state.step, "epoch": self.state.epoch, "batches_done": self.state.batches_done,
            **({"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }, is_best=is_best, metrics=self.state.last_metrics)

    def evaluate(self) -> bool:
        """Evaluate, log, checkpoint (marking the best); True when early stopping fires."""
        state, eval_config = self.state, self.config.eval_config
        self._fold_pending_loss()  # a diverged model is neither evaluated nor saved
        state.last_eval_step = state.step
        with self.sharded.plain_tables() if self.sharded else contextlib.nullcontext():
            state.last_metrics = evaluate_model(self.model, self.pipeline, self.device)
        epoch = epoch_of_step(state.step, state.epoch, state.batches_done)
        self.logger.log({"type": "eval", "step": state.step, "epoch": epoch, **state.last_metrics})
        self._log_feature_importance(epoch)
        self.progress.write(f"eval step {state.step}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in state.last_metrics.items()
            if k.startswith(("hit_rate", "ndcg@10", "mrr")) or k in ("auc", "accuracy")))
        value = state.last_metrics[eval_config.best_metric]
        is_best = value > state.best_value
        state.best_value = max(state.best_value, value)
        stop = self.stopper.update(state.last_metrics) if self.stopper else False
        stop = distributed.broadcast_bool(stop)  # rank 0 decides (every rank computed the same metrics)
        self.save(is_best)
        if stop:
            self.logger.log({"type": "early_stopping", "step": state.step, "epoch": epoch,
                             "metric": self.stopper.metric, "best": self.stopper.best,
                             "evaluations_without_improvement": self.stopper.bad_evals})
            self.progress.write(f"early stopping at step {state.step}: {self.stopper.metric} has not improved by more "
                                f"than {self.stopper.min_delta:g} in {self.stopper.bad_evals} evaluations "
                                f"(best {self.stopper.best:.4f})")
        return stop

    def test(self) -> dict:
        """Score the test rows once, with the best checkpoint (selection saw only eval_input_path)."""
        distributed.barrier()  # rank 0 has written best.pt
        best = self.checkpoints.load("best", map_location="cpu")
        model = self.pipeline.build_model().to(self.device) if self.sharded else self.model  # plain tables
        load_model_state(model, best, self.checkpoints.best_path())
        ranks = QueryRanks()
        metrics = evaluate_model(model, self.pipeline, self.device, self.config.test_input_path, ranks)
        best_epoch = epoch_of_step(best["step"], best["epoch"], best["batches_done"])
        self.logger.log({"type": "test", "step": best["step"], "epoch": best_epoch, **metrics})
        if self.main:
            print(format_metrics_table(metrics, title=f"test ({self.config.test_input_path}), best checkpoint step "
                                                      f"{best['step']}"))
            table = ranks.table()
            keys = table.column("item_key").to_numpy()
            analysis = test_analysis(table.column("rank").to_numpy(),
                                     self.pipeline.load_item_frequency().count_of(keys), self.config.eval_config)
            path = os.path.join(self.model_dir, "test_analysis.json")
            atomic_write(path, lambda f: f.write(json.dumps(analysis, indent=2).encode()))
            write_test_plots(analysis, self.model_dir)
        return {"checkpoint_step": best["step"], **metrics}

    # ---- the loop -----------------------------------------------------------------------------

    def train(self) -> dict:
        """The training loop, then the final evaluation and the test; returns the result."""
        state, train_config, eval_config = self.state, self.config.train_config, self.config.eval_config
        model, device, accumulation = self.model, self.device, self.accumulation
        stop = state.step >= self.total_steps
        window_start = time.perf_counter()
        while not stop and state.epoch < train_config.num_epochs:
            self.dataset.set_epoch(state.epoch)
            self.dataset.set_start_batch(state.batches_done)
            model.train()
            batches = iter(create_dataloader(self.dataset, self.num_workers, pin_memory=device.type == "cuda",
                                             prefetch_factor=self.pipeline.data_config.prefetch_factor))
            if self.resume_rng is not None:
                set_rng_state(self.resume_rng)
                self.resume_rng = None
            if self.world_size > 1:  # every rank stops after the same number of batches
                batches = itertools.islice(batches, max(self.batches_per_epoch - state.batches_done, 0))
            step_loss = 0.0
            for batch in self._until_interrupted(batches):
                batch = batch.to(device, non_blocking=True)
                group_start = state.batches_done - state.batches_done % accumulation
                group_size = min(accumulation, self.batches_per_epoch - group_start)
                last_micro = state.batches_done + 1 >= group_start + group_size
                if state.batches_done == group_start:
                    for optimizer in self.optimizers.values():
                        optimizer.zero_grad(set_to_none=True)
                no_sync = (self.train_model.no_sync() if self.world_size > 1 and not last_micro
                           else contextlib.nullcontext())
                with no_sync:
                    with autocast(device, self.mixed_precision):
                        outputs = self.train_model(batch)
                        losses = model.compute_loss(outputs, batch)
                    loss = losses["total"] / group_size if group_size > 1 else losses["total"]
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                model.update_metrics(outputs, batch)
                state.batches_done += 1
                step_loss = step_loss + loss.detach()  # on the device: read back at log steps only
                if not last_micro:
                    continue
                self._optimizer_step()
                state.step += 1
                self.pending_loss = (self.pending_loss[0] + step_loss, self.pending_loss[1] + 1)
                self.progress.update(state.step, step_loss, batch.batch_size * group_size * self.world_size)
                step_loss = 0.0
                if state.step % train_config.log_step_count_steps == 0:
                    self._log_train(losses, time.perf_counter() - window_start)
                    window_start = time.perf_counter()
                if eval_config.eval_every_n_steps and state.step % eval_config.eval_every_n_steps == 0:
                    stop = self.evaluate()
                elif train_config.save_checkpoints_steps and state.step % train_config.save_checkpoints_steps == 0:
                    self.save()
                if stop or state.step >= self.total_steps:
                    stop = True
                    break
                if self.interrupt_requested:
                    self._stop_interrupted()
            else:  # the epoch ran to its end
                state.epoch, state.batches_done = state.epoch + 1, 0
                if state.last_eval_step != state.step:
                    stop = self.evaluate()
        if state.last_eval_step != state.step:
            self.evaluate()
        self.progress.close()
        result = {"step": state.step, "eval": state.last_metrics}
        if self.main:
            print(format_metrics_table(state.last_metrics, title=f"full-corpus evaluation "
                                                                 f"({self.config.eval_input_path}) at step {state.step}"))
        if self.config.test_input_path:
            result["test"] = self.test()
        return result

    # ---- Ctrl-C ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sigint_saves_checkpoint(self):
        """While training one process from the main thread, the first SIGINT asks the loop to
        stop after the current step with a checkpoint (a second one interrupts at once)."""
        self.interrupt_requested = False
        if self.world_size > 1 or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def request(signum, frame) -> None:
            self.interrupt_requested = True
            signal.signal(signal.SIGINT, previous)
            self.progress.write("interrupt: finishing the current step and saving a checkpoint "
                                "(interrupt again to stop at once)")

        signal.signal(signal.SIGINT, request)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _until_interrupted(self, batches):
        """The DataLoader's batches; when an interrupt was requested and the loader fails (its
        workers received the SIGINT too), stop as interrupted instead of reporting the loader."""
        iterator = iter(batches)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Exception:
                if self.interrupt_requested:
                    self._stop_interrupted()
                raise
            yield batch

    def _stop_interrupted(self) -> None:
        """Save a checkpoint of the last finished step (unless the interrupt came in the middle
        of a gradient accumulation group) and raise TrainingInterrupted."""
        state = self.state
        if state.batches_done % self.accumulation == 0 and state.step > 0:
            self.save()
        latest = self.checkpoints.latest_path()
        raise TrainingInterrupted(
            f"training stopped at step {state.step}; "
            + (f"checkpoint {latest} saved, resume with --continue_train" if latest else "no checkpoint was saved"))

    def _optimizer_step(self) -> None:
        """Average the sparse gradients over ranks, unscale (fp16), clip, step every optimizer
        and its schedule."""
        distributed.all_reduce_sparse_gradients_(self.synced_sparse)
        clip = self.config.train_config.gradient_clip_norm
        if self.scaler is not None:
            for optimizer in self.optimizers.values():
                self.scaler.unscale_(optimizer)
        if clip > 0:
            clip_grad_norm_(self.model.parameters(), clip)
        for name, optimizer in self.optimizers.items():
            fused = name == "sparse" and self.sharded  # its update ran in the backward pass
            if self.scaler is not None and not fused:
                self.scaler.step(optimizer)
            elif not fused:
                optimizer.step()
            self.schedulers[name].step()
            if fused:
                optimizer.step()  # hands the next step's learning rate to the fused kernels
        if self.scaler is not None:
            self.scaler.update()

    def _log_train(self, losses: dict, elapsed: float) -> None:
        """One train record: the mean loss of the window, its terms, throughput, lrs, metrics."""
        state = self.state
        self._fold_pending_loss()
        window_loss, window_steps = state.loss_window
        if self.world_size > 1:  # the logged loss is the mean over ranks (= over the global batch)
            window_loss = float(distributed.all_reduce_sum_(
                torch.tensor([window_loss], dtype=torch.float64))[0]) / self.world_size
        self.logger.log({"type": "train", "step": state.step, "epoch": state.epoch,
                         "loss": window_loss / window_steps,
                         **{f"loss/{k}": float(v.detach()) for k, v in losses.items() if k != "total"},
                         "samples_per_sec": window_steps * self.accumulation * self.world_size
                         * self.pipeline.data_config.batch_size / max(elapsed, 1e-9),
                         **{f"lr/{n}": s.get_last_lr()[0] for n, s in self.schedulers.items()},
                         **self.model.compute_metrics()})
        state.loss_window = (0.0, 0)
        self._log_feature_importance(state.epoch)

    def _log_feature_importance(self, epoch: int) -> None:
        """One feature_importance record (rank 0, once per step: at log steps and evaluations):
        ``"{group}/{feature}"``: the feature's keep probability 1 - p_drop, for every group with
        variational dropout (TensorBoard: ``feature_importance/{group}/{feature}``)."""
        if not self.main or self.importance_step == self.state.step:
            return
        importance = self.model.feature_importance()
        if importance:
            self.importance_step = self.state.step
            self.logger.log({"type": "feature_importance", "step": self.state.step, "epoch": epoch,
                             **{f"{group}/{feature}": keep for group, features in importance.items()
                                for feature, keep in features.items()}})

    def _fold_pending_loss(self) -> None:
        """Add the steps' losses summed on the device since the last fold to the log window
        (one read-back: at log steps and checkpoints, not at every step)."""
        pending, steps = self.pending_loss
        if steps:
            window_loss, window_steps = self.state.loss_window
            value = float(pending)
            if not math.isfinite(value):
                last = self.checkpoints.latest_path()
                raise NonFiniteLossError(
                    f"the training loss is {value} in steps {self.state.step - steps + 1}..{self.state.step} (epoch "
                    f"{self.state.epoch}); training stopped and no checkpoint of them was written "
                    f"({'the last good one is ' + str(last) if last else 'there is no earlier checkpoint'}). Look for "
                    "extreme values in the data, or lower the learning rates (or set "
                    "train_config.gradient_clip_norm) and resume with --continue_train")
            self.state.loss_window = (window_loss + value, window_steps + steps)
            self.pending_loss = (0.0, 0)

    # ---- the whole run ------------------------------------------------------------------------

    def run(self) -> dict:
        """setup, train (or find the run finished), write the results, clean up."""
        started = time.perf_counter()
        self.setup()
        result_path = os.path.join(self.model_dir, "eval_result.json")
        state = self.state
        finished = (state.step >= self.total_steps and state.last_eval_step == state.step
                    and (not self.main or os.path.exists(result_path)))
        if distributed.broadcast_bool(finished):  # rank 0's view of the files decides
            # --continue_train of a finished run: nothing to train, evaluate or score again.
            self.cleanup()
            if self.main:
                print(f"the run in {self.model_dir} already finished at step {state.step}; nothing to do "
                      f"(results: {result_path})")
            if not os.path.exists(result_path):  # another rank, without the shared file system
                return {"step": state.step, "eval": state.last_metrics}
            with open(result_path) as f:
                return json.load(f)
        with distributed.comm_errors("training step"), self._sigint_saves_checkpoint():
            try:
                result = self.train()
            except BaseException:
                self.cleanup()  # the run log and progress display closed, whatever stopped the run
                raise
            if self.main:
                self.logger.log_hparams(run_hparams(self.config), {f"{split}/{k}": v for split in ("eval", "test")
                                                                   for k, v in (result.get(split) or {}).items()})
            self.cleanup()
            if self.main:
                atomic_write(result_path, lambda f: f.write(json.dumps(result, indent=2).encode()))
                write_curves(os.path.join(self.model_dir, "log.jsonl"), self.model_dir)
                print(closing_line(self.model_dir, time.perf_counter() - started, result), flush=True)
            distributed.barrier()
        return result

    def cleanup(self) -> None:
        """Close the progress display and the run log."""
        self.progress.close()
        self.logger.close()


def run_hparams(config) -> dict:
    """The settings TensorBoard's HParams tab compares runs by."""
    from recframe.protoutil import oneof_message

    train, data = config.train_config, config.data_config
    model = oneof_message(config.model_config, "model")
    sparse = train.sparse_optimizer.WhichOneof("optimizer") or "rowwise_adagrad_optimizer"
    sampler = oneof_message(data, "sampler")
    return {"model": type(model).__name__ if model is not None else "", "batch_size": data.batch_size,
            "num_epochs": train.num_epochs, "sparse_optimizer": sparse,
            "sparse_lr": getattr(train.sparse_optimizer, sparse).lr,
            "dense_lr": getattr(train.dense_optimizer, train.dense_optimizer.WhichOneof("optimizer") or "adam_optimizer").lr,
            "temperature": getattr(model, "temperature", 0.0), "output_dim": getattr(model, "output_dim", 0),
            "num_sample": getattr(sampler, "num_sample", 0) if sampler is not None else 0,
            "mixed_precision": train.mixed_precision, "seed": train.seed}


def train_and_evaluate(pipeline: Pipeline, model_dir: str, continue_train: bool = False,
                       device_name: str | None = None, restart_epoch: bool = False) -> dict:
    """Train the pipeline's model, evaluating and checkpointing as configured (see
    :class:`TrainRecipe`). Returns {"step", "eval": last evaluation metrics, "test": test
    metrics of the best checkpoint (when test_input_path is set)}. ``restart_epoch``: resume a
    checkpoint saved mid-epoch from the start of that epoch even though its batch size, seed or
    training files changed."""
    return TrainRecipe(pipeline, model_dir, continue_train, device_name, restart_epoch).run()


__all__ = ["EarlyStopping", "TrainRecipe", "TrainState", "autocast", "epoch_of_step", "seed_everything", "steps_in_epoch",
           "train_and_evaluate"]
