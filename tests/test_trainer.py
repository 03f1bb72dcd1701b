"""End-to-end tests of the trainer through ``recframe.train.main`` on a small synthetic dataset.

One module-scoped run (2 epochs x 20 steps) serves most assertions; the others train their own
short runs. The SIGKILL test runs ``python -m recframe.train`` in a subprocess, slowed down by a
sleep per batch so that it is reliably killed in the middle of an epoch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recframe.cli import train
from recframe.config import load_pipeline_config
from recframe.recipes.evaluate import evaluate_model
from recframe.pipeline import Pipeline

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402

BATCHES_PER_EPOCH = 20  # 2000 rows / batch_size 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared machine, torch's threads competing with other
    processes make these short runs several times slower (and the SIGKILL subprocess runs
    with OMP_NUM_THREADS=1, so that its numbers are comparable bit for bit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_log(model_dir) -> list[dict]:
    with open(Path(model_dir) / "log.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def records(model_dir, kind: str) -> list[dict]:
    return [r for r in read_log(model_dir) if r["type"] == kind]


def last_by_step(recs: list[dict]) -> dict[int, dict]:
    """{step: record}, the record logged last winning (a resumed run replays steps)."""
    return {r["step"]: r for r in recs}


def eval_result(model_dir) -> dict:
    return json.loads((Path(model_dir) / "eval_result.json").read_text())


def run(config: str, model_dir, *args: str) -> int:
    return train.main(["--pipeline_config", config, "--model_dir", str(model_dir), *args])


@pytest.fixture
def fast_io(monkeypatch):
    """Skip what these tests do not look at: PNG curves (half of a short run) and fsync."""
    import recframe.recipes.train as trainer

    monkeypatch.setattr(trainer, "write_curves", lambda *args, **kwargs: None)
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic.write_dataset(tmp_path_factory.mktemp("synthetic_data"))


def write_config(path: Path, data: dict, **options) -> str:
    path.write_text(synthetic.pipeline_config_text(data, path.parent / "unused_model_dir", **options))
    return str(path)


MAIN_OPTIONS = dict(num_epochs=5, log_step_count_steps=3, eval_every_n_steps=15,
                    save_checkpoints_steps=7, keep_checkpoint_max=2)
MAIN_EDIT = '{"train_config.num_epochs": 2}'  # the file says 5: the override must reach the run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """(config path, model_dir) of one finished run: 2 epochs of 20 steps."""
    tmp = tmp_path_factory.mktemp("trained")
    config = write_config(tmp / "pipeline.config", data, **MAIN_OPTIONS)
    model_dir = tmp / "model"
    assert run(config, model_dir, "--edit_config_json", MAIN_EDIT) == 0
    return config, model_dir


def test_checkpoint_written_on_gpu_resumes_on_cpu(trained, data, tmp_path, monkeypatch, fast_io):
    """A checkpoint whose tensors say cuda:0 (as one saved by a GPU run: weights, optimizer
    state, the RNG states, plus CUDA generators) resumes here and reaches the uninterrupted
    run's metrics."""
    _, reference_dir = trained
    config = write_config(tmp_path / "pipeline.config", data, **MAIN_OPTIONS)
    model_dir = tmp_path / "model"
    assert run(config, model_dir, "--edit_config_json", '{"train_config.num_epochs": 1}') == 0
    latest = model_dir / "checkpoints" / json.loads((model_dir / "checkpoints" / "latest.json").read_text())["path"]
    saved = torch.load(latest, map_location="cpu", weights_only=False)
    assert saved["step"] == 20 and "cuda" not in saved["rng"]
    saved["rng"]["cuda"] = [torch.get_rng_state(), torch.get_rng_state()]  # two GPUs' generators
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(saved, latest)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(latest, weights_only=False)  # it really is a GPU checkpoint
    assert run(config, model_dir, "--continue_train", "--edit_config_json", MAIN_EDIT) == 0
    resumed, reference = eval_result(model_dir), eval_result(reference_dir)
    assert resumed["step"] == reference["step"] == 40
    for split in ("eval", "test"):
        for key, value in reference[split].items():
            assert resumed[split][key] == pytest.approx(value, abs=1e-6), (split, key)


@pytest.mark.slow
def test_compiled_towers_train_like_eager_ones(data, tmp_path, fast_io):
    """train_config.compile: the same losses as eager (no dropout: no random stream differs),
    and a checkpoint with the plain model's keys (evaluate and export read it as any other)."""
    from recframe.cli import export

    options = dict(num_epochs=1, log_step_count_steps=1, dropout=0.0)
    eager = write_config(tmp_path / "eager.config", data, **options)
    compiled = write_config(tmp_path / "compiled.config", data, extra_train="compile: true", **options)
    assert run(eager, tmp_path / "eager") == 0
    assert run(compiled, tmp_path / "compiled") == 0
    losses = {name: [r["loss"] for r in records(tmp_path / name, "train")] for name in ("eager", "compiled")}
    assert len(losses["compiled"]) == len(losses["eager"]) == BATCHES_PER_EPOCH
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)
    assert eval_result(tmp_path / "compiled")["eval"]["hit_rate@10"] == pytest.approx(
        eval_result(tmp_path / "eager")["eval"]["hit_rate@10"], abs=0.02)
    saved = torch.load(tmp_path / "compiled" / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    reference = torch.load(tmp_path / "eager" / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert saved["model"].keys() == reference["model"].keys()
    assert export.main(["--pipeline_config", compiled, "--model_dir", str(tmp_path / "compiled"),
                        "--export_dir", str(tmp_path / "export")]) == 0


def test_rng_state_round_trip(monkeypatch):
    """rng_state / set_rng_state restore every stream, from CPU tensors or the uint8 tensors a
    map_location put elsewhere; CUDA generators are restored only where CUDA exists."""
    import random

    import numpy as np

    from recframe.recipes.train import rng_state, set_rng_state

    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    state = rng_state()
    if not torch.cuda.is_available():
        assert "cuda" not in state
    draws = (torch.rand(3), random.random(), np.random.rand())
    state["torch"] = state["torch"].clone().to(torch.int64).to(torch.uint8)  # a copy, as loaded
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 8  # more GPUs than here: restored where they exist
    if torch.cuda.is_available():
        state["cuda"] = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        cuda_draw = torch.rand(2, device="cuda")
    set_rng_state(state)
    assert torch.equal(torch.rand(3), draws[0]) and random.random() == draws[1] and np.random.rand() == draws[2]
    if torch.cuda.is_available():
        assert torch.equal(torch.rand(2, device="cuda"), cuda_draw)


def test_run_outputs_and_log_steps(trained):
    config, model_dir = trained
    names = {p.name for p in model_dir.iterdir()}
    assert {"pipeline.config", "log.jsonl", "checkpoints", "eval_result.json", "loss.png",
            "eval_metrics.png", "tensorboard"} <= names

    # The saved config is the input config after --edit_config_json and --model_dir.
    expected = load_pipeline_config(config)
    expected.train_config.num_epochs = 2
    expected.model_dir = str(model_dir)
    assert load_pipeline_config(str(model_dir / "pipeline.config")) == expected

    # 2 epochs (the override) of 20 steps: train records every 3 steps, evaluations every
    # 15 steps, at the end of each epoch and at the end.
    train_recs = records(model_dir, "train")
    assert [r["step"] for r in train_recs] == list(range(3, 40, 3))
    assert all(math.isfinite(r["loss"]) and r["lr/dense"] == pytest.approx(0.01) for r in train_recs)
    assert [r["epoch"] for r in train_recs] == [0] * 6 + [1] * 7
    eval_recs = records(model_dir, "eval")
    assert [r["step"] for r in eval_recs] == [15, 20, 30, 40]
    # Every record's epoch is the 0-based epoch its step ran in (step 20 ends epoch 0).
    assert [r["epoch"] for r in eval_recs] == [0, 0, 1, 1]
    (test_rec,) = records(model_dir, "test")
    assert test_rec["epoch"] == (test_rec["step"] - 1) // 20
    assert train_recs[-1]["loss"] < train_recs[0]["loss"] - 0.5

    # Checkpoints: saved at 7, 14, 15, 20, 21, 28, 30, 35, 40; the last 2 kept, plus best.pt.
    ckpt_dir = model_dir / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("ckpt-*.pt")) == ["ckpt-00000035.pt", "ckpt-00000040.pt"]
    assert (ckpt_dir / "best.pt").is_file()
    latest = json.loads((ckpt_dir / "latest.json").read_text())
    assert latest["step"] == 40
    best = json.loads((ckpt_dir / "best.json").read_text())
    best_eval = max(eval_recs, key=lambda r: r["hit_rate@10"])  # first of the maxima wins
    assert best["step"] == best_eval["step"] == test_rec["step"]

    # eval_result.json: the last evaluation and the test metrics of the best checkpoint.
    result = eval_result(model_dir)
    assert result["step"] == 40
    assert result["eval"] == {k: v for k, v in eval_recs[-1].items() if k not in ("type", "step", "epoch", "time")}
    assert result["test"]["checkpoint_step"] == best["step"]
    assert result["test"]["num_queries"] == synthetic.NUM_USERS
    assert result["test"]["num_items"] == synthetic.NUM_ITEMS
    assert result["test"]["hit_rate@10"] == test_rec["hit_rate@10"]

    for png in ("loss.png", "eval_metrics.png", "recall_at_k.png", "popularity.png"):
        assert (model_dir / png).read_bytes()[:8] == PNG_SIGNATURE
    # The test's analysis agrees with its metrics: recall@K at every K, by popularity bucket.
    analysis = json.loads((model_dir / "test_analysis.json").read_text())
    assert analysis["queries"] == synthetic.NUM_USERS and analysis["top_k"] == [10, 50]
    assert len(analysis["recall_by_k"]) == 50
    assert analysis["recall_by_k"][9] == pytest.approx(result["test"]["hit_rate@10"], abs=1e-12)
    assert analysis["recall_by_k"][49] == pytest.approx(result["test"]["hit_rate@50"], abs=1e-12)
    assert analysis["recall_by_k"] == sorted(analysis["recall_by_k"])
    buckets = analysis["popularity"]
    assert analysis["popularity_k"] == 10 and len(buckets) == 5
    assert sum(b["queries"] for b in buckets) == synthetic.NUM_USERS
    assert sum(b["recall"] * b["queries"] for b in buckets) / synthetic.NUM_USERS == pytest.approx(
        result["test"]["hit_rate@10"], abs=1e-9)
    assert [b["min_count"] for b in buckets] == sorted(b["min_count"] for b in buckets)
    # TensorBoard: the scalars, the config as text, the hyper-parameters with the final metrics.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(model_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert "train/loss" in tags["scalars"] and "eval/hit_rate@10" in tags["scalars"]
    assert "config/text_summary" in tags["tensors"]
    assert "hparam/test/hit_rate@10" in tags["scalars"]
    assert events.Scalars("hparam/test/hit_rate@10")[0].value == pytest.approx(result["test"]["hit_rate@10"],
                                                                             abs=1e-6)


def test_metrics_rise_far_above_chance(trained):
    config, model_dir = trained
    pipeline = Pipeline.from_file(str(model_dir / "pipeline.config"))
    torch.manual_seed(pipeline.config.train_config.seed)
    untrained = evaluate_model(pipeline.build_model(), pipeline, torch.device("cpu"))
    chance = 10 / synthetic.NUM_ITEMS
    assert untrained["hit_rate@10"] < 3 * chance
    trained_metrics = eval_result(model_dir)["eval"]
    assert trained_metrics["hit_rate@10"] > 10 * chance
    assert trained_metrics["hit_rate@10"] > untrained["hit_rate@10"] + 0.4
    assert eval_result(model_dir)["test"]["hit_rate@10"] > 10 * chance


def test_same_seed_same_result_other_seed_differs(trained, tmp_path, fast_io):
    config, model_dir = trained
    assert run(config, tmp_path / "again", "--edit_config_json", MAIN_EDIT) == 0
    assert eval_result(tmp_path / "again") == eval_result(model_dir)
    assert [r["loss"] for r in records(tmp_path / "again", "train")] == \
        [r["loss"] for r in records(model_dir, "train")]

    # Another seed (only the first 15 steps, compared with the same steps of the main run).
    edit = '{"train_config.num_epochs": 2, "train_config.num_steps": 15, "train_config.seed": 8}'
    assert run(config, tmp_path / "other_seed", "--edit_config_json", edit) == 0
    other = records(tmp_path / "other_seed", "train")
    assert [r["step"] for r in other] == [3, 6, 9, 12, 15]
    assert all(o["loss"] != m["loss"] for o, m in zip(other, records(model_dir, "train")))
    other_eval, main_eval = records(tmp_path / "other_seed", "eval")[0], records(model_dir, "eval")[0]
    assert other_eval["step"] == main_eval["step"] == 15
    assert other_eval["mrr"] != main_eval["mrr"]


def test_refuses_non_empty_model_dir(trained, capsys):
    config, model_dir = trained
    before = (model_dir / "log.jsonl").read_text()
    assert run(config, model_dir) == 2
    err = capsys.readouterr().err
    assert str(model_dir) in err and "--continue_train" in err
    assert len(err.strip().splitlines()) == 1
    assert (model_dir / "log.jsonl").read_text() == before


def test_continue_train_of_a_finished_run_trains_no_more(trained, tmp_path, fast_io, capsys):
    """--continue_train after the last step: nothing is trained again, results unchanged."""
    import shutil

    config, model_dir = trained
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert run(config, copy, "--continue_train", "--edit_config_json", MAIN_EDIT) == 0
    assert "already finished at step 40; nothing to do" in capsys.readouterr().out
    assert (copy / "log.jsonl").read_text() == (model_dir / "log.jsonl").read_text()  # no record added
    assert eval_result(copy) == eval_result(model_dir)


@pytest.mark.parametrize("edit, needle", [
    ('{"model_config.dssm.temperature": -1}', "model_config.dssm.temperature"),
    ('{"train_config.num_epoch": 1}', "num_epoch"),
    ('{"eval_config.best_metric": "hit_rate@7"}', "eval_config.best_metric"),
])
def test_config_error_exits_2_naming_the_field(data, tmp_path, capsys, edit, needle):
    config = write_config(tmp_path / "pipeline.config", data)
    assert run(config, tmp_path / "model", "--edit_config_json", edit) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pipeline.config" in err and needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "model").exists()


def test_config_file_error_is_one_line(data, tmp_path, capsys):
    config = tmp_path / "pipeline.config"
    write_config(config, data)
    config.write_text(config.read_text().replace("num_epochs: 3", "num_epochz: 3"))
    assert run(str(config), tmp_path / "model") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pipeline.config:" in err and "num_epochz" in err and "num_epochs" in err


def test_missing_input_path_is_a_clear_error(data, tmp_path, capsys):
    missing = str(tmp_path / "nope.parquet")
    config = write_config(tmp_path / "pipeline.config", {**data, "train": missing})
    assert run(config, tmp_path / "model") == 2
    err = capsys.readouterr().err
    assert "train_input_path" in err and missing in err and "Traceback" not in err
    # Nothing that would make the next attempt need --continue_train.
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_data_is_a_one_line_error(data, tmp_path, capsys, num_workers, fast_io):
    # num_users 100 < the 200 user ids of the data: an id out of range, found while training
    # (with workers, in a worker process).
    config = tmp_path / "pipeline.config"
    config.write_text(synthetic.pipeline_config_text(data, tmp_path / "model", num_users=100,
                                                     num_workers=num_workers))
    assert run(str(config), tmp_path / "model") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0, err
    assert "feature 'user_id'" in err and "num_buckets=100" in err and "Traceback" not in err


def test_early_stopping_on_a_plateau(data, tmp_path, fast_io, capsys):
    # lr 1e-12 leaves every float32 parameter unchanged: the metric is exactly flat.
    config = write_config(
        tmp_path / "pipeline.config", data, num_epochs=5, lr=1e-12, eval_every_n_steps=10,
        log_step_count_steps=5,
        extra_eval='early_stopping { metric: "hit_rate@10" patience: 2 }')
    model_dir = tmp_path / "model"
    assert run(config, model_dir) == 0
    evals = records(model_dir, "eval")
    # step 10 sets the best, 20 and 30 do not improve: patience 2 stops at step 30 of 100.
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert len({r["hit_rate@10"] for r in evals}) == 1
    assert max(r["step"] for r in records(model_dir, "train")) == 30
    (stopped,) = records(model_dir, "early_stopping")
    assert stopped["step"] == 30 and stopped["metric"] == "hit_rate@10"
    assert stopped["evaluations_without_improvement"] == 2 and stopped["best"] == evals[0]["hit_rate@10"]
    assert eval_result(model_dir)["step"] == 30
    assert eval_result(model_dir)["test"]["checkpoint_step"] == 10
    assert "early stopping at step 30: hit_rate@10 has not improved" in capsys.readouterr().err


def test_resume_mid_epoch_with_other_num_workers_is_refused(data, tmp_path, fast_io, capsys):
    config = write_config(tmp_path / "pipeline.config", data, num_epochs=1, log_step_count_steps=5)
    model_dir = tmp_path / "model"
    assert run(config, model_dir, "--edit_config_json", '{"train_config.num_steps": 5}') == 0
    edit = '{"data_config.num_workers": 2}'
    assert run(config, model_dir, "--continue_train", "--edit_config_json", edit) == 2
    err = capsys.readouterr().err
    assert "data_config.num_workers" in err and "ckpt-00000005.pt" in err


# ---- SIGKILL in the middle of an epoch, then --continue_train ------------------------------

# Runs recframe.train as __main__ with a sleep before every training batch (numerics untouched),
# so the test can kill it between a checkpoint and the end of the epoch.
SLOW_TRAIN = """
import runpy, sys, time
import recframe.recipes.train as trainer

_create = trainer.create_dataloader

def slow_dataloader(*args, **kwargs):
    for batch in _create(*args, **kwargs):
        time.sleep(DELAY)
        yield batch

DELAY = float(sys.argv.pop(1))
trainer.create_dataloader = slow_dataloader
sys.argv[0] = "recframe.train"
runpy.run_module("recframe.train", run_name="__main__")
"""

KILL_AFTER_STEP = 25  # epoch 1 runs steps 21..40; checkpoints every 5 steps


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(data, tmp_path, num_workers, fast_io):
    # Loss records every 3 steps, checkpoints every 5: resuming starts inside a log window.
    config = write_config(tmp_path / "pipeline.config", data, num_epochs=2, log_step_count_steps=3,
                          save_checkpoints_steps=5, num_workers=num_workers)
    killed_dir = tmp_path / "killed"
    latest_json = killed_dir / "checkpoints" / "latest.json"
    env = {**os.environ, "RECFRAME_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_TRAIN, "0.1", "--pipeline_config", config, "--model_dir", str(killed_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        saved_step = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                saved_step = json.loads(latest_json.read_text())["step"]
            except (OSError, ValueError, KeyError):
                pass
            if saved_step >= KILL_AFTER_STEP:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == -signal.SIGKILL, f"run ended with {rc} before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.stderr.close()
    # Killed in the middle of epoch 1 (steps 21..40), after a checkpoint and before the epoch's end
    # (normally right after step 25; a slow poll may let it save step 30 or 35 first).
    latest = json.loads(latest_json.read_text())["step"]
    assert latest in (25, 30, 35)
    assert max(r["step"] for r in records(killed_dir, "train")) < 2 * BATCHES_PER_EPOCH
    assert [r["step"] for r in records(killed_dir, "eval")] == [20]
    assert not (killed_dir / "eval_result.json").exists()

    assert run(config, killed_dir, "--continue_train") == 0
    reference_dir = tmp_path / "reference"
    assert run(config, reference_dir) == 0

    resumed, reference = eval_result(killed_dir), eval_result(reference_dir)
    assert resumed["step"] == reference["step"] == 2 * BATCHES_PER_EPOCH
    for split in ("eval", "test"):
        assert resumed[split].keys() == reference[split].keys()
        for key, value in reference[split].items():
            assert resumed[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    # The training loss records after the resume point are those of the uninterrupted run (the
    # first one averages over steps before and after the kill: the checkpoint keeps the window).
    ref_train = last_by_step(records(reference_dir, "train"))
    res_train = last_by_step(records(killed_dir, "train"))
    assert sorted(res_train) == sorted(ref_train) == list(range(3, 40, 3))
    after = [s for s in res_train if s > latest]
    assert after[0] % 5 != 0 and len(after) >= 2
    for step in after:
        assert res_train[step]["loss"] == pytest.approx(ref_train[step]["loss"], abs=1e-6), step
    ref_evals = last_by_step(records(reference_dir, "eval"))
    res_evals = last_by_step(records(killed_dir, "eval"))
    assert sorted(res_evals) == sorted(ref_evals) == [20, 40]
    assert res_evals[40]["ndcg@10"] == pytest.approx(ref_evals[40]["ndcg@10"], abs=1e-6)
