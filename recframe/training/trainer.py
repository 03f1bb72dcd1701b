"""The training loop: train, evaluate full-corpus, checkpoint, resume, stop early.

Everything the loop does is in :func:`train_and_evaluate`, top to bottom.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import time

import numpy as np
import torch

from recframe import distributed
from recframe.config import ConfigError, save_pipeline_config
from recframe.data import create_dataloader
from recframe.evaluation import evaluate_model
from recframe.pipeline import Pipeline, resolve_device
from recframe.files import atomic_write
from recframe.training.checkpoint import CheckpointManager, ensure_model_dir
from recframe.training.lr_schedule import build_lr_scheduler
from recframe.training.optim import build_optimizer, split_sparse_dense
from recframe.training.plots import write_curves
from recframe.metrics.table import format_metrics_table
from recframe.training.run_log import ProgressBar, RunLogger


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (parameters and dropout)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


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


def _autocast(device: torch.device, mixed_precision: str):
    if mixed_precision in ("", "none"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_and_evaluate(pipeline: Pipeline, model_dir: str, continue_train: bool = False,
                       device_name: str | None = None) -> dict:
    """Train the pipeline's model, evaluating and checkpointing as configured.

    Writes to ``model_dir``: ``pipeline.config`` (resolved), ``checkpoints/``, ``log.jsonl``,
    ``tensorboard/``, ``eval_result.json``, ``loss.png`` and ``eval_metrics.png``.
    Returns {"step", "eval": last evaluation metrics, "test": test metrics of the best
    checkpoint (when test_input_path is set)}.

    Under torchrun (WORLD_SIZE > 1) every rank runs this function: see docs/distributed.md.
    Rank 0 writes everything; a failed collective raises
    :class:`~recframe.distributed.DistributedError`.
    """
    config = pipeline.config
    train_config, eval_config = config.train_config, config.eval_config
    device = resolve_device(device_name or train_config.device)
    device = distributed.setup(device, train_config.process_group_timeout_seconds)
    rank, world_size = distributed.rank(), distributed.world_size()
    main = rank == 0
    mixed_precision = train_config.mixed_precision or "none"
    if mixed_precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{pipeline.source}: train_config.mixed_precision: fp16 on device {device}, "
                          "expected CUDA (or bf16 / none on CPU)")
    ensure_model_dir(model_dir, continue_train)
    seed_everything(train_config.seed)
    if main:
        pipeline.prepare_data()
    distributed.barrier()
    pipeline.prepare_data()  # no-op once rank 0 wrote the tables
    pipeline.check_input_paths()  # before anything is written: a typo must not leave a run behind
    checkpoints = CheckpointManager(model_dir, train_config.keep_checkpoint_max)
    distributed.barrier()  # every rank checked model_dir before rank 0 writes into it
    if main:
        save_pipeline_config(config, os.path.join(model_dir, "pipeline.config"))

    # Data: every feature is parsed inside the DataLoader workers. Each rank reads its shard.
    parser = pipeline.train_parser()
    dataset = pipeline.dataset(config.train_input_path, parser.columns(), parser, seed=train_config.seed,
                               rank=rank, world_size=world_size)
    num_workers = pipeline.data_config.num_workers
    accumulation = max(int(train_config.gradient_accumulation_steps), 1)
    batches_per_epoch = steps_in_epoch(dataset, num_workers, world_size)  # micro-batches
    steps_per_epoch = -(-batches_per_epoch // accumulation)  # optimizer steps
    total_steps = train_config.num_epochs * steps_per_epoch
    if train_config.num_steps:
        total_steps = min(total_steps, train_config.num_steps)

    # Model and optimizers: embedding tables get the sparse optimizer, the rest the dense one.
    model = pipeline.build_model().to(device)
    sparse_params, dense_params = split_sparse_dense(model)
    optimizers, schedulers = {}, {}
    for name, params, cfg in (("sparse", sparse_params, train_config.sparse_optimizer),
                              ("dense", dense_params, train_config.dense_optimizer)):
        optimizer = build_optimizer(params, cfg)
        if optimizer is not None:
            optimizers[name] = optimizer
            schedulers[name] = build_lr_scheduler(optimizer, cfg, total_steps)
    scaler = torch.amp.GradScaler(device.type) if mixed_precision == "fp16" else None

    stopper = None
    if eval_config.HasField("early_stopping"):
        es = eval_config.early_stopping
        stopper = EarlyStopping(es.metric, es.patience, es.min_delta)
    step, epoch, batches_done, best_value, last_metrics = 0, 0, 0, -math.inf, {}
    window_loss, window_steps = 0.0, 0
    resume_rng = None  # RNG state to restore once the resumed epoch's DataLoader iterator exists
    resumed_eval_step = -1  # the step of the resumed checkpoint's last evaluation

    if continue_train and checkpoints.latest_path() is not None:
        state = checkpoints.load("latest", map_location=device)
        model.load_state_dict(state["model"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            schedulers[name].load_state_dict(state["schedulers"][name])
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        best_value, last_metrics = state["best_value"], state["last_metrics"]
        resumed_eval_step = state.get("last_eval_step", -1)
        if stopper is not None:
            stopper.best, stopper.bad_evals = state["early_stopping"]
        window_loss, window_steps = state.get("loss_window", (0.0, 0))
        saved_workers = state.get("num_workers")
        saved_world = state.get("world_size", 1)
        restart_epoch = False
        if batches_done and saved_world != world_size:
            # Rows are split among the ranks: the saved position means other rows now.
            restart_epoch = True
            if main:
                print(f"warning: the checkpoint {checkpoints.latest_path()} was saved in the middle of epoch "
                      f"{epoch} by {saved_world} process(es); resuming with {world_size} restarts that epoch "
                      f"from its first batch (step {step} is kept)")
        elif batches_done and saved_workers is not None and max(saved_workers, 1) != max(num_workers, 1):
            # Rows are split among the workers: another number of them would replay other rows.
            raise ConfigError(
                f"{pipeline.source}: data_config.num_workers: {num_workers}, but the checkpoint "
                f"{checkpoints.latest_path()} was saved in the middle of an epoch with num_workers = "
                f"{saved_workers}; resume with the same value")
        if restart_epoch:
            batches_done = 0
            _set_rng_state(state["rng"])
        elif batches_done:
            # Mid-epoch: the interrupted run saved its RNG state after iter(DataLoader) had drawn
            # its base seed from torch's RNG; the resumed iterator draws one more, so restore after.
            resume_rng = state["rng"]
        else:
            _set_rng_state(state["rng"])
        if main:
            print(f"resumed from {checkpoints.latest_path()} at step {step} (epoch {epoch}, batch {batches_done})")

    # DDP after loading: it broadcasts rank 0's parameters and averages gradients.
    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=None)

    logger = RunLogger(model_dir) if main else _Quiet()
    progress = ProgressBar(total_steps, train_config.log_step_count_steps, initial=step) if main else _Quiet()

    def save(is_best: bool = False) -> None:
        if not main:
            return
        # The unwrapped model's state_dict: the same keys whatever the world size.
        checkpoints.save(step, {
            "model": model.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "step": step, "epoch": epoch, "batches_done": batches_done,
            "best_value": best_value, "last_metrics": last_metrics,
            "early_stopping": (stopper.best, stopper.bad_evals) if stopper else None,
            "rng": _rng_state(),
            "loss_window": (window_loss, window_steps),  # partial log window, for an identical first record
            "last_eval_step": last_eval_step,  # last_metrics are of this step
            "num_workers": num_workers,  # a mid-epoch data position is only valid with the same value
            "world_size": world_size,  # ... and with the same number of ranks
            **({"grad_scaler": scaler.state_dict()} if scaler is not None else {}),
        }, is_best=is_best, metrics=last_metrics)

    # A resumed run that was evaluated at its last step is not evaluated again at that step.
    last_eval_step = resumed_eval_step

    def evaluate() -> bool:
        """Evaluate, log, checkpoint (marking the best); True when early stopping fires."""
        nonlocal best_value, last_metrics, last_eval_step
        last_eval_step = step
        last_metrics = evaluate_model(model, pipeline, device)
        logger.log({"type": "eval", "step": step, "epoch": epoch_of_step(step, epoch, batches_done), **last_metrics})
        progress.write(f"eval step {step}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in last_metrics.items() if k.startswith(("hit_rate", "ndcg@10", "mrr"))))
        value = last_metrics[eval_config.best_metric]
        is_best = value > best_value
        best_value = max(best_value, value)
        stop = stopper.update(last_metrics) if stopper else False
        stop = distributed.broadcast_bool(stop)  # rank 0 decides (every rank computed the same metrics)
        save(is_best)
        if stop:
            logger.log({"type": "early_stopping", "step": step, "epoch": epoch_of_step(step, epoch, batches_done),
                        "metric": stopper.metric,
                        "best": stopper.best, "evaluations_without_improvement": stopper.bad_evals})
            progress.write(f"early stopping at step {step}: {stopper.metric} has not improved by more than "
                           f"{stopper.min_delta:g} in {stopper.bad_evals} evaluations (best {stopper.best:.4f})")
        return stop

    stop = step >= total_steps
    result_path = os.path.join(model_dir, "eval_result.json")
    finished = stop and last_eval_step == step and (not main or os.path.exists(result_path))
    if distributed.broadcast_bool(finished):  # rank 0's view of the files decides
        # --continue_train of a finished run: nothing to train, evaluate or score again.
        progress.close()
        logger.close()
        if main:
            print(f"the run in {model_dir} already finished at step {step}; nothing to do (results: {result_path})")
        if not os.path.exists(result_path):  # another rank, without the shared file system
            return {"step": step, "eval": last_metrics}
        with open(result_path) as f:
            return json.load(f)
    window_start = time.perf_counter()
    with distributed.comm_errors("training step"):
        while not stop and epoch < train_config.num_epochs:
            dataset.set_epoch(epoch)
            dataset.set_start_batch(batches_done)
            model.train()
            batches = iter(create_dataloader(dataset, num_workers))
            if resume_rng is not None:
                _set_rng_state(resume_rng)
                resume_rng = None
            if world_size > 1:  # every rank stops after the same number of batches
                batches = itertools.islice(batches, max(batches_per_epoch - batches_done, 0))
            step_loss = 0.0
            for batch in batches:
                batch = batch.to(device, non_blocking=True)
                group_start = batches_done - batches_done % accumulation
                group_size = min(accumulation, batches_per_epoch - group_start)
                last_micro = batches_done + 1 >= group_start + group_size
                if batches_done == group_start:
                    for optimizer in optimizers.values():
                        optimizer.zero_grad(set_to_none=True)
                no_sync = (train_model.no_sync() if world_size > 1 and not last_micro
                           else contextlib.nullcontext())
                with no_sync:
                    with _autocast(device, mixed_precision):
                        outputs = train_model(batch)
                        losses = model.compute_loss(outputs, batch)
                    loss = losses["total"] / group_size if group_size > 1 else losses["total"]
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                model.update_metrics(outputs, batch)
                batches_done += 1
                step_loss += float(loss.detach())
                if not last_micro:
                    continue
                if scaler is not None:
                    for optimizer in optimizers.values():
                        scaler.unscale_(optimizer)
                if train_config.gradient_clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.gradient_clip_norm)
                for name, optimizer in optimizers.items():
                    if scaler is not None:
                        scaler.step(optimizer)
                    else:
                        optimizer.step()
                    schedulers[name].step()
                if scaler is not None:
                    scaler.update()
                step += 1
                window_loss += step_loss
                window_steps += 1
                progress.update(step, step_loss, batch.batch_size * group_size * world_size)
                step_loss = 0.0

                if step % train_config.log_step_count_steps == 0:
                    elapsed = time.perf_counter() - window_start
                    if world_size > 1:  # the logged loss is the mean over ranks (= over the global batch)
                        window_loss = float(distributed.all_reduce_sum_(
                            torch.tensor([window_loss], dtype=torch.float64))[0]) / world_size
                    logger.log({"type": "train", "step": step, "epoch": epoch,
                                "loss": window_loss / window_steps,
                                **{f"loss/{k}": float(v.detach()) for k, v in losses.items() if k != "total"},
                                "samples_per_sec": window_steps * accumulation * world_size
                                * pipeline.data_config.batch_size / max(elapsed, 1e-9),
                                **{f"lr/{n}": s.get_last_lr()[0] for n, s in schedulers.items()},
                                **model.compute_metrics()})
                    window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()

                if eval_config.eval_every_n_steps and step % eval_config.eval_every_n_steps == 0:
                    stop = evaluate()
                elif train_config.save_checkpoints_steps and step % train_config.save_checkpoints_steps == 0:
                    save()
                if stop or step >= total_steps:
                    stop = True
                    break
            else:  # the epoch ran to its end
                epoch, batches_done = epoch + 1, 0
                if last_eval_step != step:
                    stop = evaluate()
        if last_eval_step != step:
            evaluate()
        progress.close()
        result = {"step": step, "eval": last_metrics}
        if main:
            print(format_metrics_table(last_metrics, title=f"full-corpus evaluation ({config.eval_input_path}) at step {step}"))
        if config.test_input_path:
            # Model selection saw only eval_input_path; the test rows are scored once, by the best checkpoint.
            distributed.barrier()  # rank 0 has written best.pt
            best = checkpoints.load("best", map_location=device)
            model.load_state_dict(best["model"])
            test_metrics = evaluate_model(model, pipeline, device, config.test_input_path)
            best_epoch = epoch_of_step(best["step"], best["epoch"], best["batches_done"])
            logger.log({"type": "test", "step": best["step"], "epoch": best_epoch, **test_metrics})
            result["test"] = {"checkpoint_step": best["step"], **test_metrics}
            if main:
                print(format_metrics_table(test_metrics, title=f"test ({config.test_input_path}), best checkpoint step {best['step']}"))
        logger.close()
        if main:
            atomic_write(result_path,
                         lambda f: f.write(json.dumps(result, indent=2).encode()))
            write_curves(os.path.join(model_dir, "log.jsonl"), model_dir)
        distributed.barrier()
    return result
