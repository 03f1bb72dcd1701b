"""Launching training processes in tests: torchrun, a clean environment, reading the run log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(rank: int | None = None, world: int | None = None, port: int | None = None) -> dict:
    """This environment without torchrun's variables (or with those of ``rank`` of ``world``),
    one OpenMP thread, unbuffered output."""
    result = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        result.pop(key, None)
    if rank is not None:
        result.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return result


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` with ``nproc`` CPU processes on a free port."""
    cmd = [PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    return subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def train_losses(model_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) of every train record of a run's log.jsonl."""
    records = [json.loads(line) for line in (model_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["type"] == "train"]


def interleave_for_two_ranks(src: str, dst: str, batch: int) -> None:
    """Rows ordered so that 1 process's batch k of 2*batch rows is [rank 0's batch k,
    rank 1's batch k] of the 2-rank run over ``src`` (the reader gives rank r the r-th
    contiguous half of the rows)."""
    table = pq.read_table(src)
    half = table.num_rows // 2
    order = []
    for start in range(0, half, batch):
        order += list(range(start, min(start + batch, half)))
        order += list(range(half + start, min(half + start + batch, table.num_rows)))
    pq.write_table(table.take(pa.array(order)), dst)
