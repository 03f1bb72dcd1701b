"""Which device a command runs on: one home for ``--device`` and ``train_config.device``.

``auto`` (or empty) is CUDA when available, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are
taken as given, but a CUDA device this machine does not have is refused at once with
:class:`DeviceError` (instead of the first tensor op failing later, deep in a run).
"""

from __future__ import annotations

import torch

from recframe.errors import RecframeError


class DeviceError(RecframeError, ValueError):
    """The requested device does not exist here."""


def resolve_device(name: str | None, what: str = "--device") -> torch.device:
    """The torch device ``name`` names ("auto", "", "cpu", "cuda", "cuda:N"); ``what`` names the
    setting in the error message."""
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{what}: unknown device {name!r}, expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"this torch {torch.__version__} has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise DeviceError(f"{what}: {name!r} asked for, but CUDA is not available ({build}); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{what}: {name!r}, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise DeviceError(f"{what}: unknown device {name!r}, expected auto, cpu, cuda or cuda:N")
    return device


__all__ = ["DeviceError", "resolve_device"]
