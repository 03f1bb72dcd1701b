"""Distributed training throughput: samples/s of 1 process vs N processes (gloo on CPU).

Each setup runs ``recframe train`` (1 process) or ``python -m torch.distributed.run
--nproc_per_node=N -m recframe.train`` on the synthetic two-tower data of
``tests/synthetic.py`` (scaled by ``--users``), with the same per-rank ``--batch_size`` (so the
global batch of N processes is N x batch_size), one epoch, evaluation only at the end. The
reported samples/s is the trainer's own ``samples_per_sec`` (global: all ranks) of the
``log.jsonl`` train records, median over the records after the first (which includes warm-up);
the wall time of the whole command (start-up, data, final evaluation) is shown too.

    python benchmarks/distributed.py                     # 1 and 2 processes
    python benchmarks/distributed.py --nprocs 1 2 4 --batch_size 256 --global_negatives

On a machine with few cores the processes compete for them: each process uses
``--threads`` intra-op threads (default 1), so N processes need N cores to scale.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synthetic import pipeline_config_text, write_dataset  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nproc: int, config: str, model_dir: Path, threads: int) -> dict:
    train = ["-m", "recframe.train", "--pipeline_config", config, "--model_dir", str(model_dir)]
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *train]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (model_dir / "log.jsonl").read_text().splitlines()]
    rates = [r["samples_per_sec"] for r in records if r["type"] == "train"][1:]
    steps = max(r["step"] for r in records if r["type"] == "train")
    return {"samples_per_sec": statistics.median(rates) if rates else float("nan"), "steps": steps, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch_size", type=int, default=128, help="per-rank batch size")
    parser.add_argument("--users", type=int, default=2000, help="users of the synthetic data (10 rows each)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--global_negatives", action="store_true", help="train_config.global_in_batch_negative")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recframe-bench-dist-") as tmp:
        paths = write_dataset(Path(tmp) / "data", num_users=args.users)
        text = pipeline_config_text(paths, Path(tmp) / "unused", num_epochs=1, batch_size=args.batch_size,
                                    log_step_count_steps=10, dropout=0.0, num_users=args.users,
                                    extra_train="global_in_batch_negative: true" if args.global_negatives else "")
        config = Path(tmp) / "pipeline.config"
        config.write_text(text)
        rows = []
        for nproc in args.nprocs:
            result = run(nproc, str(config), Path(tmp) / f"model-{nproc}", args.threads)
            rows.append((nproc, result))
        base = rows[0][1]["samples_per_sec"]
        print(f"per-rank batch {args.batch_size}, {args.users * 10} training rows, {args.threads} thread(s) per process, "
              f"global negatives {'on' if args.global_negatives else 'off'}, {os.cpu_count()} CPUs")
        print(f"{'processes':>9}  {'samples/s':>10}  {'speed-up':>8}  {'steps':>6}  {'wall s':>7}")
        for nproc, r in rows:
            print(f"{nproc:>9}  {r['samples_per_sec']:>10.0f}  {r['samples_per_sec'] / base:>8.2f}  "
                  f"{r['steps']:>6}  {r['wall_s']:>7.1f}")


if __name__ == "__main__":
    main()
