"""Checkpoints under ``model_dir/checkpoints/``, written atomically.

Layout::

    model_dir/checkpoints/
        ckpt-00001000.pt     one file per saved step (at most keep_checkpoint_max of them)
        latest.json          {"step": 1000, "path": "ckpt-00001000.pt", "metrics": ...}
        best.pt              the best checkpoint so far (kept apart from the step files)
        best.json            {"step": 800, "path": "best.pt", "metrics": {...}}

Every file is written to a hidden temporary name in the same directory (``.tmp-*``), flushed
and fsync'ed, then renamed over its final name with ``os.replace`` (atomic on POSIX and
Windows); a crash therefore leaves either the old file or the new one under a final name,
never a truncated one. Leftover temporaries never match ``ckpt-*.pt`` and are removed by the
next :class:`CheckpointManager`.

In distributed training only rank 0 should call :meth:`CheckpointManager.save`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recframe.config.errors import ConfigError
from recframe.errors import RecframeError
from recframe.files import TMP_PREFIX, atomic_copy, atomic_write, check_output_path

CHECKPOINT_DIRNAME = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")


class ModelDirNotEmptyError(RecframeError, FileExistsError):
    """``model_dir`` already holds a run and ``continue_train`` was not asked for."""


class CheckpointError(RecframeError, ValueError):
    """A checkpoint file cannot be read (truncated, damaged, not a checkpoint) or does not fit
    the model the config builds."""


def check_model_dir(model_dir: str | os.PathLike, continue_train: bool) -> None:
    """Check, without creating anything, that a run may write into ``model_dir``.

    Raises:
        ModelDirNotEmptyError: ``model_dir`` exists, is not empty and ``continue_train`` is
            False (so a new run never silently mixes with, or overwrites, an old one).
        NotADirectoryError: ``model_dir`` exists and is a file.
        OutputPathError: a parent of ``model_dir`` is a file, or ``model_dir`` (or the existing
            parent it would be created in) is not writable.
    """
    path = Path(model_dir)
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"model_dir {str(path)!r} exists and is not a directory")
        if not continue_train and any(path.iterdir()):
            raise ModelDirNotEmptyError(
                f"model_dir {str(path)!r} already exists and is not empty (it holds an earlier "
                "run): use --continue_train or a new model_dir"
            )
    check_output_path(path, "model_dir", directory=True)  # under a file, or not writable


def ensure_model_dir(model_dir: str | os.PathLike, continue_train: bool) -> Path:
    """Create ``model_dir`` (with parents) after :func:`check_model_dir`."""
    check_model_dir(model_dir, continue_train)
    path = Path(model_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"model_dir {str(path)!r}: cannot create it ({e.strerror or e})") from None
    return path


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"), "w")


class CheckpointManager:
    """Saves, rotates and finds the checkpoints of one run.

    Args:
        model_dir: the run directory; checkpoints go to ``model_dir/checkpoints/``.
        keep_checkpoint_max: number of step checkpoints kept (oldest deleted first);
            0 keeps all. ``best.pt`` is kept apart and never rotated away.
        read_only: only find checkpoints: create no directory and leave the temporary files
            of a crashed (or still running) writer alone.
    """

    def __init__(self, model_dir: str | os.PathLike, keep_checkpoint_max: int = 5, read_only: bool = False) -> None:
        if keep_checkpoint_max < 0:
            raise ValueError(f"keep_checkpoint_max = {keep_checkpoint_max}: expected >= 0")
        self.model_dir = Path(model_dir)
        self.dir = self.model_dir / CHECKPOINT_DIRNAME
        self.keep_checkpoint_max = int(keep_checkpoint_max)
        if read_only:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for junk in self.dir.glob(f"{TMP_PREFIX}*"):  # left by a crash mid-write
            try:
                junk.unlink()
            except OSError:
                pass

    # -- paths -------------------------------------------------------------------------
    def step_path(self, step: int) -> Path:
        """Final path of the checkpoint of ``step``."""
        return self.dir / f"ckpt-{int(step):08d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Existing step checkpoints as (step, path), oldest step first."""
        found = []
        if not self.dir.is_dir():
            return found
        for p in self.dir.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest_path(self) -> Path | None:
        """The most recent checkpoint: ``latest.json``'s target, else the highest step file."""
        info = self._read_json(self.dir / "latest.json")
        if info and isinstance(info.get("path"), str):
            p = self.dir / info["path"]
            if p.is_file():
                return p
        ckpts = self.checkpoints()
        return ckpts[-1][1] if ckpts else None

    def best_path(self) -> Path | None:
        """``checkpoints/best.pt`` if a best checkpoint was saved."""
        p = self.dir / "best.pt"
        return p if p.is_file() else None

    def best_info(self) -> dict | None:
        """Contents of ``best.json`` ({"step", "path", "metrics"}), or None."""
        return self._read_json(self.dir / "best.json")

    def latest_info(self) -> dict | None:
        """Contents of ``latest.json`` ({"step", "path", "metrics"}), or None."""
        return self._read_json(self.dir / "latest.json")

    # -- save / load -------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: dict[str, Any],
        is_best: bool = False,
        metrics: dict[str, float] | None = None,
    ) -> Path:
        """Write ``state`` as the checkpoint of ``step`` and return its path.

        Order: step file, ``latest.json``, then (if ``is_best``) ``best.pt`` and
        ``best.json``, then rotation of old step files. Saving a step that already exists
        replaces it atomically.
        """
        path = self.step_path(step)
        atomic_write(path, lambda f: torch.save(state, f))
        metrics = _jsonable(metrics) if metrics is not None else None
        _write_json(self.dir / "latest.json", {"step": int(step), "path": path.name, "metrics": metrics})
        if is_best:
            self._save_best(path, step, metrics)
        self._rotate(keep=path)
        return path

    def _save_best(self, src: Path, step: int, metrics: dict | None) -> None:
        atomic_copy(src, self.dir / "best.pt")  # a hard link where possible: no second copy of the data
        _write_json(self.dir / "best.json", {"step": int(step), "path": "best.pt", "metrics": metrics})

    def _rotate(self, keep: Path) -> None:
        """Delete the oldest step files beyond keep_checkpoint_max, never ``keep`` (just saved)."""
        if self.keep_checkpoint_max == 0:
            return
        others = [p for _, p in self.checkpoints() if p != keep]
        for p in others[: max(0, len(others) + 1 - self.keep_checkpoint_max)]:
            p.unlink()

    def resolve(self, which: str | os.PathLike = "latest") -> Path:
        """Path of ``"latest"``, ``"best"`` or an explicit checkpoint path.

        Raises:
            FileNotFoundError: with what was looked for and where.
        """
        if str(which) == "latest":
            p = self.latest_path()
            if p is None:
                raise FileNotFoundError(f"no checkpoint in {str(self.dir)!r}")
            return p
        if str(which) == "best":
            p = self.best_path()
            if p is None:
                raise FileNotFoundError(f"no best checkpoint (best.pt) in {str(self.dir)!r}")
            return p
        p = Path(which)
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
        return p

    def load_resumable(self, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]] | None:
        """The newest readable checkpoint as (path, state), or None when there is none.

        The latest checkpoint first, then the older step files, newest first: one that cannot
        be read (a truncated or damaged file) is skipped with a warning naming it. Raises
        CheckpointError when checkpoints exist and none of them can be read.
        """
        candidates = [p for p in [self.latest_path()] if p is not None]
        candidates += [p for _, p in reversed(self.checkpoints()) if p not in candidates]
        problems = []
        for path in candidates:
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError as e:
                problems.append(str(e))
                continue
            for problem in problems:
                print(f"warning: {problem}; resuming from the previous checkpoint {path}", flush=True)
            return path, state
        if problems:
            raise CheckpointError(f"no checkpoint in {str(self.dir)!r} can be read: " + "; ".join(problems))
        return None

    def load(
        self,
        which: str | os.PathLike = "latest",
        map_location: Any = "cpu",
        weights_only: bool = True,
    ) -> dict[str, Any]:
        """Load a checkpoint: ``"latest"``, ``"best"`` or a path.

        ``weights_only=True`` (torch's safe loader) accepts tensors, dicts, lists, tuples,
        strings, numbers and numeric numpy arrays (e.g. ``np.random.get_state()``); pass
        False for states holding other Python objects (only for files you trust).
        """
        return load_checkpoint(self.resolve(which), map_location, weights_only)

    @staticmethod
    def _read_json(path: Path) -> dict | None:
        try:
            with open(path) as f:
                obj = json.load(f)
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None


def _numpy_safe_globals() -> list:
    """numpy classes / functions needed to unpickle plain numeric arrays (no object arrays)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    dtypes = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
              np.uint64, np.float16, np.float32, np.float64)
    return [_reconstruct, np.ndarray, np.dtype, *{type(np.dtype(t)) for t in dtypes}]


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """``torch.load`` of a checkpoint file; the safe loader also accepts numeric numpy arrays.

    Raises CheckpointError naming the file when it is truncated, damaged or not a checkpoint
    (a dict with the model's ``"model"`` state).
    """
    try:
        if not weights_only:
            state = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                state = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds objects the safe loader refuses to unpickle "
                              f"(only tensors, numbers, strings and containers load): {str(e).splitlines()[0][:200]}"
                              ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for damaged files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} cannot be read (truncated or damaged?): "
                              f"{reason[:200]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} is not a recframe checkpoint (got a "
                              f"{type(state).__name__}, expected a dict)")
    return state


def load_model_state(model: torch.nn.Module, checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Load a checkpoint's ``"model"`` state into ``model``, or raise CheckpointError naming the
    checkpoint and the parameters that do not fit (missing, unexpected, or another shape: the
    config changed)."""
    state = checkpoint.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} is not a recframe checkpoint (no model state)")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    problems = ([f"missing {missing[:5]}"] if missing else []) + ([f"unexpected {unexpected[:5]}"] if unexpected else [])
    problems += shapes[:5]
    if problems:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} does not fit the model the config builds (was the "
                              f"config changed?): {'; '.join(problems)}")
    model.load_state_dict(state)


def resolve_checkpoint(model_dir: str, which: str, source: str) -> str:
    """Path of the checkpoint ``which`` names: "best" / "latest" in ``model_dir``/checkpoints,
    or an explicit file (the ``--checkpoint_path`` of evaluate and export; never creates dirs).

    Raises FileNotFoundError for a missing file or checkpoint, ConfigError (naming ``source``)
    when "best" / "latest" is asked for without a model_dir.
    """
    if which not in ("best", "latest"):
        if not os.path.isfile(which):
            raise FileNotFoundError(f"--checkpoint_path: checkpoint {which!r} does not exist")
        return which
    if not model_dir:
        raise ConfigError(f"{source}: model_dir: not set; set it in the config or pass --model_dir")
    if not os.path.isdir(os.path.join(model_dir, CHECKPOINT_DIRNAME)):
        raise FileNotFoundError(f"no {CHECKPOINT_DIRNAME}/ directory in model_dir {model_dir!r}: train first, "
                                "or pass --model_dir / --checkpoint_path")
    # Read-only: a writing manager would also delete the .tmp-* files of a run still training.
    manager = CheckpointManager(model_dir, read_only=True)
    path = manager.best_path() if which == "best" else manager.latest_path()
    if path is None:
        missing = "best.pt" if which == "best" else "latest.json and ckpt-*.pt"
        raise FileNotFoundError(f"no {which} checkpoint in {str(manager.dir)!r} ({missing} missing)")
    return str(path)


def resolve_warm_start(path: str) -> str:
    """The checkpoint file a ``fine_tune_checkpoint`` names: the file itself, or the latest
    checkpoint of a ``checkpoints/`` folder or of a model_dir holding one."""
    if os.path.isfile(path):
        return path
    folder = Path(path)
    if folder.is_dir() and (folder / CHECKPOINT_DIRNAME).is_dir():
        folder = folder / CHECKPOINT_DIRNAME
    if folder.is_dir() and folder.name == CHECKPOINT_DIRNAME:
        latest = CheckpointManager(folder.parent, read_only=True).latest_path()
        if latest is not None:
            return str(latest)
    raise FileNotFoundError(f"fine_tune_checkpoint: {path!r} is not a checkpoint file, nor a model_dir or "
                            f"{CHECKPOINT_DIRNAME}/ folder holding one")


@dataclass
class WarmStartReport:
    """What :func:`warm_start` took from a checkpoint.

    ``loaded``: parameter names copied whole; ``partial``: (name, what) of tables of another
    row count (the rows both have copied); ``skipped``: (name, why) of this model's parameters
    that kept their fresh values; ``unused``: the checkpoint's entries nothing took.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as printable lines."""
        out = [f"warm start from {self.source}: {len(self.loaded)} parameter(s) loaded, {len(self.partial)} partly, "
               f"{len(self.skipped)} not (fresh values)"]
        out += [f"  partly: {name}: {what}" for name, what in self.partial]
        out += [f"  not loaded: {name}: {why}" for name, why in self.skipped]
        if self.unused:
            out.append(f"  unused from the checkpoint: {', '.join(self.unused)}")
        return out


def _table_name(key: str) -> str | None:
    """``<name>`` of an embedding table's key ``...tables.<name>.weight``, else None."""
    parts = key.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-3] == "tables" and parts[-1] == "weight" else None


def warm_start(model: torch.nn.Module, saved: dict[str, torch.Tensor], source: str) -> WarmStartReport:
    """Copy a checkpoint's weights into ``model`` by name (module docstring of the config
    field ``train_config.fine_tune_checkpoint``); returns the report."""
    report = WarmStartReport(source)
    state = model.state_dict()
    by_table: dict[str, list[str]] = {}
    for key in saved:
        if _table_name(key) is not None:
            by_table.setdefault(_table_name(key), []).append(key)
    taken: set[str] = set()
    with torch.no_grad():
        for key, target in state.items():
            name = _table_name(key)
            if key in saved:
                source_key = key
            else:  # a table under another path (e.g. DSSM -> DSSMV2): the first of its name
                source_key = min(by_table[name]) if name in by_table else None
            if source_key is None:
                report.skipped.append((key, "not in the checkpoint"))
                continue
            value = saved[source_key]
            via = "" if source_key == key else f" (from {source_key})"
            if value.shape == target.shape:
                target.copy_(value)
                report.loaded.append(key + via)
            elif name is not None and value.dim() == 2 and value.shape[1] == target.shape[1]:
                rows = min(value.shape[0], target.shape[0])
                target[:rows].copy_(value[:rows])
                report.partial.append((key, f"rows 0..{rows - 1} of {target.shape[0]} from a table of "
                                            f"{value.shape[0]} rows{via}"))
            else:
                report.skipped.append((key, f"shape {tuple(target.shape)} here, {tuple(value.shape)} in the "
                                            f"checkpoint{via}"))
                continue
            taken.add(source_key)
    report.unused = sorted(k for k in saved if k not in taken)
    return report


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor):
            v = v.item()
        elif hasattr(v, "item") and not isinstance(v, (int, float, str, bool)):
            v = v.item()  # numpy scalars
        out[str(k)] = v
    return out


__all__ = [
    "CHECKPOINT_DIRNAME",
    "CheckpointError",
    "CheckpointManager",
    "ModelDirNotEmptyError",
    "WarmStartReport",
    "check_model_dir",
    "ensure_model_dir",
    "load_checkpoint",
    "load_model_state",
    "resolve_checkpoint",
    "resolve_warm_start",
    "warm_start",
]
