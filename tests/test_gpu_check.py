"""benchmarks/gpu_check.sh: the prepared GPU check (issue 15) refuses to run without CUDA, and
its dry run (every stage on the CPU, tiny) passes, so that the script cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_fails_loudly(tmp_path):
    done = _check("--out", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 1
    assert "error: the GPU check needs CUDA" in done.stderr and "--dry_run" in done.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


@pytest.mark.slow
def test_dry_run_passes_every_stage(tmp_path):
    done = _check("--dry_run", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    names = [s["name"] for s in report["stages"]]
    assert names == ["quick start fp32", "quick start bf16", "fp16 (grad scaler)", "kill + resume",
                     "evaluate / export / predict", "host syncs per step", "throughput batch 64 fp32",
                     "throughput batch 64 bf16", "throughput batch 64 compile", "scale"]
    assert all(s["ok"] for s in report["stages"]), [s for s in report["stages"] if not s["ok"]]
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["kill + resume"]["details"]["max_diff"] <= 1e-6
    assert stages["host syncs per step"]["details"]["syncs"] == 0
    assert 0.0 <= stages["quick start fp32"]["details"]["hit_rate@10"] <= 1.0
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.count("| ok |") == len(names) and "(dry run)" in table
    assert (tmp_path / "out" / "logs" / "quick_start_none.log").is_file()
