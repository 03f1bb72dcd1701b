"""Training outputs: the JSONL run log, TensorBoard scalars, progress display.

(Named ``run_log`` rather than ``logging`` so it never shadows the standard library module.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("recframe")

#: Keys of a log record that are not metric values (not sent to TensorBoard).
NON_METRIC_KEYS = frozenset({"type", "step", "epoch", "time", "wall_time", "elapsed_s"})
NO_PROGRESS_ENV = "RECFRAME_NO_PROGRESS"

_tensorboard_warned = False


def _to_number(value: Any) -> Any:
    """Tensors / numpy scalars -> Python numbers; other values unchanged."""
    if hasattr(value, "item") and not isinstance(value, (bool, int, float, str)):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class RunLogger:
    """Appends training / evaluation records to ``model_dir/log.jsonl`` and TensorBoard.

    Each call to :meth:`log` writes one JSON object on one line and flushes it, so the file
    can be followed (``tail -f``) and read while the run goes on. A record should carry
    ``"type"`` (``"train"`` or ``"eval"``), ``"step"`` and ``"epoch"`` plus metric values;
    ``"time"`` (Unix seconds) is added when absent. Non-finite floats are written as
    ``NaN`` / ``Infinity`` (what Python's ``json`` reads back).

    Numeric values other than step / epoch / time also go to TensorBoard under
    ``"{type}/{key}"`` (e.g. ``train/loss``, ``eval/hit_rate@50``) in
    ``model_dir/tensorboard/``, when ``torch.utils.tensorboard`` can be imported (the
    ``tensorboard`` extra); otherwise a warning says so once and only the JSONL is written.

    In distributed training, create it on rank 0 only.
    """

    def __init__(self, model_dir: str | os.PathLike, enable_tensorboard: bool = True) -> None:
        self.model_dir = Path(model_dir)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.model_dir / "log.jsonl"
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8")
        self._writer = _make_summary_writer(self.model_dir / "tensorboard") if enable_tensorboard else None

    @property
    def tensorboard_enabled(self) -> bool:
        return self._writer is not None

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one record; returns the record as written (values converted to numbers)."""
        if self._file is None:
            raise RuntimeError(f"RunLogger for {str(self.path)!r} is closed")
        rec = {str(k): _to_number(v) for k, v in record.items()}
        rec.setdefault("time", time.time())
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        if self._writer is not None and "step" in rec:
            kind = rec.get("type", "train")
            for key, value in rec.items():
                if key not in NON_METRIC_KEYS and _is_number(value):
                    self._writer.add_scalar(f"{kind}/{key}", value, global_step=int(rec["step"]))
            self._writer.flush()
        return rec

    def log_text(self, tag: str, text: str) -> None:
        """Text for TensorBoard's Text tab (e.g. the resolved config), as a code block."""
        if self._writer is not None:
            self._writer.add_text(tag, "    " + text.replace("\n", "\n    "), global_step=0)
            self._writer.flush()

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's settings and final metrics for TensorBoard's HParams tab (runs compared
        side by side)."""
        if self._writer is not None:
            values = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
            scores = {f"hparam/{k}": float(v) for k, v in metrics.items() if _is_number(v)}
            self._writer.add_hparams(values, scores, run_name=".")
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the files (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_summary_writer(log_dir: Path):
    global _tensorboard_warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        if not _tensorboard_warned:
            logger.warning(
                "TensorBoard logging is off: torch.utils.tensorboard cannot be imported (%s). "
                "Install it with: pip install tensorboard. "
                "Metrics are still written to log.jsonl.",
                e,
            )
            _tensorboard_warned = True
        return None
    return SummaryWriter(log_dir=str(log_dir))


# --- progress ------------------------------------------------------------------------------


def progress_disabled_by_env() -> bool:
    """True when ``RECFRAME_NO_PROGRESS`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(NO_PROGRESS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class ProgressBar:
    """Training progress: a tqdm bar on a terminal, periodic one-line summaries otherwise.

    The bar shows step/total, ETA (when ``total`` is known), loss and samples/s. It is
    replaced by a line every ``log_every`` steps, e.g.
    ``step 200/1000 (20.0%) loss 0.6931 samples/s 5120.3 elapsed 0:00:04 eta 0:00:16``,
    when ``stream`` is not a TTY, when ``RECFRAME_NO_PROGRESS=1`` or when ``enabled=False``.
    ``quiet=True`` prints nothing at all (for ranks other than 0).

    Args:
        total: total number of steps, or None when unknown (no ETA).
        log_every: steps between summary lines (``train_config.log_step_count_steps``).
        initial: the step training starts (or resumes) from.
        enabled: force the bar on (True) or off (False); None = automatic.
        quiet: print nothing.
        stream: where to write (default stderr).
    """

    def __init__(
        self,
        total: int | None,
        log_every: int = 100,
        initial: int = 0,
        enabled: bool | None = None,
        quiet: bool = False,
        desc: str = "train",
        stream: TextIO | None = None,
    ) -> None:
        self.total = int(total) if total else None
        self.log_every = max(1, int(log_every))
        self.step = int(initial)
        self.quiet = quiet
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", lambda: False)
            enabled = bool(isatty()) and not progress_disabled_by_env()
        self.bar_enabled = bool(enabled) and not quiet
        self._start = time.perf_counter()
        self._start_step = self.step
        self._win_time = self._start
        self._win_samples = 0
        self._loss: Any = None
        self._bar = None
        if self.bar_enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total, initial=self.step, desc=desc, unit="step",
                file=self.stream, dynamic_ncols=True,
            )

    def update(self, step: int, loss: Any = None, samples: int = 0) -> str | None:
        """Record that optimizer step ``step`` (1-based count of steps done) finished.

        ``loss`` may be a tensor: it is converted to a float only when displayed (each
        conversion of a CUDA tensor synchronizes the device). ``samples`` is the number of
        training samples in the step(s) since the previous call.

        Returns the summary line when one was printed (lines mode), else None.
        """
        advanced = int(step) - self.step
        self.step = int(step)
        self._win_samples += int(samples)
        if loss is not None:
            self._loss = loss
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.update(advanced)
            if now - self._win_time >= 0.5:  # refresh the postfix at most twice a second
                self._bar.set_postfix_str(self._postfix(now), refresh=False)
                self._reset_window(now)
            return None
        if self.quiet or self.step % self.log_every:
            return None
        line = self.summary_line(now)
        self._reset_window(now)
        print(line, file=self.stream, flush=True)
        return line

    def _samples_per_s(self, now: float) -> float:
        dt = now - self._win_time
        return self._win_samples / dt if dt > 0 else float("nan")

    def _loss_str(self) -> str:
        if self._loss is None:
            return "-"
        try:
            return f"{float(self._loss):.4f}"
        except (TypeError, ValueError):
            return str(self._loss)

    def _postfix(self, now: float) -> str:
        return f"loss={self._loss_str()}, samples/s={self._samples_per_s(now):.1f}"

    def _reset_window(self, now: float) -> None:
        self._win_time = now
        self._win_samples = 0

    def summary_line(self, now: float | None = None) -> str:
        """The one-line summary of the current state."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self._start
        done = self.step - self._start_step
        if self.total:
            head = f"step {self.step}/{self.total} ({100.0 * self.step / self.total:.1f}%)"
            rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
            eta = (self.total - self.step) / rate if rate == rate and rate > 0 else float("nan")
            tail = f" elapsed {_fmt_duration(elapsed)} eta {_fmt_duration(eta)}"
        else:
            head = f"step {self.step}"
            tail = f" elapsed {_fmt_duration(elapsed)}"
        return (
            f"{self.desc}: {head} loss {self._loss_str()} "
            f"samples/s {self._samples_per_s(now):.1f}{tail}"
        )

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "NO_PROGRESS_ENV",
    "ProgressBar",
    "RunLogger",
    "progress_disabled_by_env",
]
