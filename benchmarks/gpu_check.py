"""The GPU check: every GPU claim of recframe, run once on a CUDA machine, one summary table.

    RECFRAME_DATA_DIR=/path/to/data bash benchmarks/gpu_check.sh --out OUT   # on a GPU machine
    bash benchmarks/gpu_check.sh --dry_run --out OUT                          # the same, tiny, on the CPU

Stages (each a subprocess with a time limit; a failing stage is reported and the others still
run; the exit status is 1 when any failed):

1. ``quick start fp32`` / ``bf16``: ``recframe train`` on the quick start with
   ``--device cuda``: test HR@10 / HR@50 of the best checkpoint, wall time.
2. ``fp16``: 200 steps with ``mixed_precision: "fp16"`` (grad scaler): the last loss is finite.
3. ``kill + resume``: the fp32 run again with checkpoints every 100 steps, SIGKILLed after the
   checkpoint of step 300, then ``--continue_train``: its test metrics against the
   uninterrupted fp32 run (CUDA's scatter-adds are not deterministic: within 0.01 HR@10).
4. ``evaluate`` / ``export`` / ``predict`` with ``--device cuda``: evaluate equals the fp32
   run's test metrics; export checks its programs moved to the GPU; the GPU's item
   embeddings equal the CPU's.
5. ``syncs``: host syncs per training step (``torch.cuda.set_sync_debug_mode``) over 10 steps.
6. ``throughput``: ``benchmarks/train_throughput.py`` at batch 1024 and 8192, fp32 / bf16 /
   compile: samples/s of the recframe loop and of a bare loop.
7. ``scale``: ``benchmarks/scale.py --device cuda`` training rows (10k, 1M, 10M; sparse, dense,
   TorchRec when installed) and full-corpus evaluation of 10k users x 1M items.

Without CUDA the check stops at once with an error (it never skips to a CPU run by itself);
``--dry_run`` runs every stage on the CPU, on synthetic data of the quick start's schema, at
tiny sizes (fp16 runs as bf16 there: fp16 autocast needs CUDA), so that this script is
tested (tests/test_gpu_check.py) and cannot rot. The table and ``gpu_check.json`` go to
``--out``, with each stage's output in ``--out/logs``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUICK_START = ROOT / "examples" / "dssm_movielens.config"
PYTHON = sys.executable

# Runs a recframe command with a pause after every training batch (the dry run's kill stage
# needs a run slow enough to be killed between two checkpoints).
SLOWED = """
import sys, time
import recframe.recipes.train as trainer
delay = float(sys.argv.pop(1))
_create = trainer.create_dataloader
def slowed(*args, **kwargs):
    for batch in _create(*args, **kwargs):
        time.sleep(delay)
        yield batch
trainer.create_dataloader = slowed
from recframe.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Sizes:
    """How big each stage runs: the GPU run's sizes, or the dry run's."""

    fp16_steps: int = 200
    save_every: int = 100
    kill_after: int = 300
    slow_delay: float = 0.0
    resume_tolerance: float = 0.01
    throughput_batches: tuple = (1024, 8192)
    throughput_steps: int = 100
    throughput_warmup: int = 10
    scale_rows: tuple = (10_000, 1_000_000, 10_000_000)
    scale_steps: int = 20
    eval_users: int = 10_000
    eval_items: int = 1_000_000
    timeout: int = 240


DRY = Sizes(fp16_steps=5, save_every=5, kill_after=10, slow_delay=0.05, resume_tolerance=1e-6,
            throughput_batches=(64,), throughput_steps=4, throughput_warmup=2, scale_rows=(1_000, 10_000),
            scale_steps=2, eval_users=100, eval_items=5_000, timeout=240)


@dataclass
class Stage:
    name: str
    result: str = ""
    seconds: float = 0.0
    ok: bool = False
    details: dict = field(default_factory=dict)


class Check:
    """Runs the stages and keeps their records."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dry = args.dry_run
        self.device = "cpu" if self.dry else "cuda"
        self.sizes = DRY if self.dry else Sizes()
        self.out = Path(args.out).resolve()
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.stages: list[Stage] = []
        self.env = {**os.environ, "RECFRAME_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join([str(HERE), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    # ---- plumbing ---------------------------------------------------------------------------

    def run(self, name: str, cmd: list[str], timeout: int | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` (its output to logs/<name>.log); raise with its last line when it fails."""
        done = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout or self.sizes.timeout)
        (self.logs / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
            raise RuntimeError(f"exit {done.returncode}: {lines[-1] if lines else '?'}")
        return done

    def stage(self, name: str, body) -> Stage:
        record = Stage(name)
        start = time.perf_counter()
        try:
            record.result, record.ok, record.details = body()
        except Exception as e:  # noqa: BLE001 - a failed stage is reported, the others still run
            record.result, record.ok = f"FAILED: {type(e).__name__}: {e}"[:300], False
        record.seconds = time.perf_counter() - start
        self.stages.append(record)
        print(f"[{'ok' if record.ok else 'FAIL'}] {name}: {record.result} ({record.seconds:.1f} s)", flush=True)
        return record

    def train(self, name: str, config: str, edits: dict, model_dir: Path, *extra: str) -> dict:
        self.run(name, [PYTHON, "-m", "recframe.train", "--pipeline_config", config, "--model_dir", str(model_dir),
                        "--device", self.device, "--edit_config_json", json.dumps(edits), *extra])
        return json.loads((model_dir / "eval_result.json").read_text())

    # ---- data -------------------------------------------------------------------------------

    def quick_start(self) -> str:
        """The quick start config (the GPU run), or it over synthetic tables of its schema (dry run)."""
        if not self.dry:
            raw = Path(os.environ.get("RECFRAME_DATA_DIR", "")) / "ml-100k" / "u.data"
            if not raw.is_file():
                raise SystemExit(f"error: the GPU check trains the quick start on MovieLens-100K: set RECFRAME_DATA_DIR "
                                 f"to a folder holding ml-100k/u.data (not found: {raw})")
            return str(QUICK_START)
        from recframe.config import load_pipeline_config, save_pipeline_config
        from train_throughput import size_tables_to_data, write_synthetic

        data = self.work / "data"
        data.mkdir()
        write_synthetic(str(data), 3_000, 200, 300, seed=0)
        config = load_pipeline_config(str(QUICK_START))
        config.train_input_path = str(data / "train.parquet")
        config.eval_input_path = config.test_input_path = str(data / "valid.parquet")
        config.item_input_path = str(data / "items.parquet")
        config.data_config.ClearField("movielens")
        config.data_config.negative_sampler.input_path = str(data / "items.parquet")
        config.data_config.negative_sampler.num_sample = 32
        config.data_config.batch_size = 128
        config.train_config.num_epochs = 2
        size_tables_to_data(config, str(data))
        path = self.work / "quick_start_synthetic.config"
        save_pipeline_config(config, path)
        return str(path)

    # ---- stages -----------------------------------------------------------------------------

    def check(self) -> int:
        import torch

        if not self.dry and not torch.cuda.is_available():
            print(f"error: the GPU check needs CUDA, and this torch {torch.__version__} sees none "
                  f"(torch.version.cuda={torch.version.cuda}); run it on a GPU machine, or --dry_run here",
                  file=sys.stderr)
            return 1
        config = self.quick_start()
        name = torch.cuda.get_device_name(0) if not self.dry else "cpu (dry run)"
        print(f"# GPU check: {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
        runs: dict[str, dict] = {}

        def quick_start(precision: str):
            def body():
                model_dir = self.work / f"qs_{precision}"
                start = time.perf_counter()
                result = self.train(f"quick_start_{precision}", config, {"train_config.mixed_precision": precision},
                                    model_dir)
                runs[precision] = {"dir": model_dir, "result": result}
                test = result["test"]
                return (f"test HR@10 {test['hit_rate@10']:.4f}, HR@50 {test['hit_rate@50']:.4f}, "
                        f"wall {time.perf_counter() - start:.0f} s", True, test)
            return body

        self.stage("quick start fp32", quick_start("none"))
        self.stage("quick start bf16", quick_start("bf16"))
        self.stage("fp16 (grad scaler)", self.fp16(config))
        self.stage("kill + resume", self.kill_and_resume(config, runs))
        self.stage("evaluate / export / predict", self.serve(config, runs))
        self.stage("host syncs per step", self.syncs(config))
        for batch in self.sizes.throughput_batches:
            for mode in ("fp32", "bf16", "compile"):
                self.stage(f"throughput batch {batch} {mode}", self.throughput(batch, mode))
        self.stage("scale", self.scale())
        shutil.rmtree(self.work, ignore_errors=True)
        return self.report(name)

    def fp16(self, config: str):
        def body():
            precision = "bf16" if self.dry else "fp16"  # fp16 autocast needs CUDA
            model_dir = self.work / "fp16"
            edits = {"train_config.mixed_precision": precision, "train_config.num_steps": self.sizes.fp16_steps,
                     "train_config.log_step_count_steps": 1}
            self.train("fp16", config, edits, model_dir)
            losses = [json.loads(line)["loss"] for line in (model_dir / "log.jsonl").read_text().splitlines()
                      if json.loads(line)["type"] == "train"]
            ok = len(losses) == self.sizes.fp16_steps and all(math.isfinite(v) for v in losses)
            return (f"{precision}: {len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
                    f"{'all finite' if ok else 'NOT FINITE'}", ok, {"losses": losses[-5:]})
        return body

    def kill_and_resume(self, config: str, runs: dict):
        def body():
            if "none" not in runs:
                raise RuntimeError("needs the quick start fp32 run")
            model_dir = self.work / "killed"
            edits = json.dumps({"train_config.save_checkpoints_steps": self.sizes.save_every})
            latest = model_dir / "checkpoints" / "latest.json"
            cmd = [PYTHON, "-c", SLOWED, str(self.sizes.slow_delay), "--pipeline_config", config, "--model_dir",
                   str(model_dir), "--device", self.device, "--edit_config_json", edits]
            with open(self.logs / "killed.log", "w") as log:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                saved, deadline = 0, time.monotonic() + self.sizes.timeout
                try:
                    while proc.poll() is None and time.monotonic() < deadline:
                        try:
                            saved = json.loads(latest.read_text())["step"]
                        except (OSError, ValueError, KeyError):
                            pass
                        if saved >= self.sizes.kill_after:
                            proc.send_signal(signal.SIGKILL)
                            break
                        time.sleep(0.01)
                    proc.wait(timeout=60)
                finally:
                    if proc.poll() is None:
                        proc.kill()
            if proc.returncode != -signal.SIGKILL:
                raise RuntimeError(f"the run ended with {proc.returncode} before it could be killed")
            resumed = self.train("resumed", config, {"train_config.save_checkpoints_steps": self.sizes.save_every},
                                 model_dir, "--continue_train")
            reference = runs["none"]["result"]["test"]
            diff = max(abs(resumed["test"][k] - reference[k]) for k in ("hit_rate@10", "hit_rate@50", "ndcg@10"))
            ok = resumed["step"] == runs["none"]["result"]["step"] and diff <= self.sizes.resume_tolerance
            return (f"killed after the checkpoint of step {saved}, resumed to step {resumed['step']}; test metrics "
                    f"within {diff:.2g} of the uninterrupted run", ok, {"killed_at": saved, "max_diff": diff})
        return body

    def serve(self, config: str, runs: dict):
        def body():
            import numpy as np
            import pyarrow.parquet as pq

            if "none" not in runs:
                raise RuntimeError("needs the quick start fp32 run")
            run = runs["none"]
            model_dir, test_path = run["dir"], self._config_paths(config)
            out = self.work / "evaluate.json"
            self.run("evaluate", [PYTHON, "-m", "recframe.evaluate", "--pipeline_config", config, "--model_dir",
                                  str(model_dir), "--eval_input_path", test_path["test"], "--device", self.device,
                                  "--output", str(out)])
            evaluated = json.loads(out.read_text())
            eval_diff = max(abs(evaluated[k] - v) for k, v in run["result"]["test"].items() if isinstance(v, float))
            export_dir = self.work / "export"
            self.run("export", [PYTHON, "-m", "recframe.export", "--pipeline_config", config, "--model_dir",
                                str(model_dir), "--export_dir", str(export_dir), "--device", self.device])
            embeddings = {}
            for device in dict.fromkeys([self.device, "cpu"]):
                path = self.work / f"items_{device}.parquet"
                self.run(f"predict_{device}", [PYTHON, "-m", "recframe.predict", "--export_dir",
                                               str(export_dir / "item"), "--input", test_path["items"], "--output",
                                               str(path), "--device", device, "--no_progress"])
                embeddings[device] = np.stack(pq.read_table(path).column("embedding").to_numpy(zero_copy_only=False))
            predict_diff = float(np.abs(embeddings[self.device] - embeddings["cpu"]).max())
            ok = eval_diff <= 1e-6 and predict_diff <= 1e-4
            return (f"evaluate on {self.device} = training's test metrics (max diff {eval_diff:.1g}); export checked "
                    f"on {self.device}; predict {self.device} vs cpu max diff {predict_diff:.1g}", ok,
                    {"evaluate_diff": eval_diff, "predict_diff": predict_diff})
        return body

    def _config_paths(self, config: str) -> dict:
        from recframe.config import load_pipeline_config

        parsed = load_pipeline_config(config)
        return {"test": parsed.test_input_path, "items": parsed.item_input_path}

    def syncs(self, config: str):
        def body():
            done = self.run("syncs", [PYTHON, str(HERE / "gpu_check.py"), "--sync_probe", config, self.device])
            probe = json.loads(done.stdout.strip().splitlines()[-1])
            per_step = probe["syncs"] / probe["steps"]
            where = ", ".join(f"{k} {v}" for k, v in probe["by_kind"].items()) or "none"
            return f"{per_step:.1f} per step over {probe['steps']} steps of {probe['scope']} ({where})", True, probe
        return body

    def throughput(self, batch: int, mode: str):
        def body():
            out = self.work / f"throughput_{batch}_{mode}.json"
            cmd = [PYTHON, str(HERE / "train_throughput.py"), "--device", self.device, "--batch_size", str(batch),
                   "--steps", str(self.sizes.throughput_steps), "--warmup", str(self.sizes.throughput_warmup),
                   "--repeats", "1", "--json", str(out)]
            cmd += {"fp32": [], "bf16": ["--mixed_precision", "bf16"], "compile": ["--compile"]}[mode]
            self.run(f"throughput_{batch}_{mode}", cmd, timeout=max(self.sizes.timeout, 300))
            r = json.loads(out.read_text())
            return (f"recframe {r['recframe_samples_per_sec']:,.0f} samples/s, bare loop "
                    f"{r['bare_samples_per_sec']:,.0f} (ratio {r['ratio']:.2f})", True, r)
        return body

    def scale(self):
        def body():
            out = self.work / "scale.json"
            self.run("scale", [PYTHON, str(HERE / "scale.py"), "--device", self.device, "--parts", "train", "eval",
                               "--rows", *map(str, self.sizes.scale_rows), "--steps", str(self.sizes.scale_steps),
                               "--warmup", "2", "--eval_users", str(self.sizes.eval_users), "--eval_items",
                               str(self.sizes.eval_items), "--json", str(out)], timeout=max(self.sizes.timeout, 400))
            records = json.loads(out.read_text())
            train = [r for r in records if r["benchmark"] == "train"]
            text = "; ".join(f"{r['backend']} {r['rows']:,} rows {r['ms_per_step']:.1f} ms/step" for r in train)
            evaluation = [r for r in records if r["benchmark"] == "eval"]
            if evaluation:
                text += f"; eval {evaluation[0]['users']:,} x {evaluation[0]['rows']:,}: {evaluation[0]['seconds']:.2f} s"
            return text, bool(train) and bool(evaluation), {"records": records}
        return body

    # ---- report -----------------------------------------------------------------------------

    def report(self, device_name: str) -> int:
        lines = [f"# GPU check: {device_name}, {time.strftime('%Y-%m-%d')}" + (" (dry run)" if self.dry else ""), "",
                 "| stage | result | seconds | status |", "|---|---|---:|---|"]
        lines += [f"| {s.name} | {s.result} | {s.seconds:.1f} | {'ok' if s.ok else 'FAIL'} |" for s in self.stages]
        table = "\n".join(lines)
        print("\n" + table, flush=True)
        (self.out / "gpu_check.md").write_text(table + "\n")
        (self.out / "gpu_check.json").write_text(json.dumps(
            {"device": device_name, "dry_run": self.dry, "date": time.strftime("%Y-%m-%d"),
             "stages": [asdict(s) for s in self.stages]}, indent=2, default=str))
        return 0 if all(s.ok for s in self.stages) else 1


def sync_probe(config: str, device_name: str) -> dict:
    """Host syncs of 10 training steps of ``config`` on ``device_name`` (after 3 warm-up steps):
    CUDA's sync debug mode on a GPU; on the CPU the aten operators that would sync."""
    import collections
    import warnings

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from recframe.pipeline import Pipeline
    from recframe.training.optim import build_optimizer, split_sparse_dense

    device = torch.device(device_name)
    pipeline = Pipeline.from_file(config)
    parser = pipeline.train_parser()
    batches = iter(pipeline.dataset(pipeline.config.train_input_path, parser.columns(), parser))
    model = pipeline.build_model().to(device)
    tables, dense = split_sparse_dense(model)
    optimizers = [o for o in (build_optimizer(tables, pipeline.config.train_config.sparse_optimizer),
                              build_optimizer(dense, pipeline.config.train_config.dense_optimizer)) if o is not None]
    kinds: collections.Counter = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.__name__.split(".")[0]
            if name in ("_local_scalar_dense", "nonzero", "masked_select", "_unique2", "item"):
                kinds[name] += 1
            return func(*args, **(kwargs or {}))

    def step(batch, counter=None) -> None:
        with counter or contextlib.nullcontext():
            outputs = model(batch)
            model.compute_loss(outputs, batch)["total"].backward()
            model.update_metrics(outputs, batch)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step(next(batches).to(device))
    steps = 10
    prepared = [next(batches).to(device) for _ in range(steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in prepared:
                step(batch)
        torch.cuda.set_sync_debug_mode(0)
        for w in caught:
            if "synchroniz" in str(w.message):
                kinds[f"{Path(w.filename).name}:{w.lineno}"] += 1  # where the Python code asked for it
        scope = "the whole step"
    else:  # torch's optimizers read their step counters, CPU tensors on a GPU too: not counted here
        for batch in prepared:
            step(batch, Count())
        scope = "forward, loss, backward, metrics"
    return {"steps": steps, "syncs": sum(kinds.values()), "by_kind": dict(kinds), "scope": scope}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry_run", action="store_true", help="every stage on the CPU at tiny sizes")
    parser.add_argument("--out", default="gpu_check_out", help="folder of the table, the JSON and the logs")
    parser.add_argument("--sync_probe", nargs=2, metavar=("CONFIG", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sync_probe:
        print(json.dumps(sync_probe(*args.sync_probe)))
        return 0
    return Check(args).check()


if __name__ == "__main__":
    sys.exit(main())
