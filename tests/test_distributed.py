"""Distributed training and evaluation on CPU with 2 gloo processes (issue #6).

(a) every training row is read exactly once per epoch across ranks; (b) the loss trajectory
of 2 ranks x batch B with global in-batch negatives equals 1 rank x batch 2B; (c) distributed
full-corpus metrics equal single-process ones; (d) killing a rank makes the other exit
non-zero with a clear message, and --continue_train resumes on one process. Plus gradient
accumulation and bf16 autocast on CPU, which need no second process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from launch import PYTHON, clean_env, free_port, interleave_for_two_ranks, torchrun, train_losses
from synthetic import write_config


# ---- (a) exactly once per epoch across ranks -------------------------------------------------

def _read_rows_worker(rank: int, world: int, port: int, path: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                           init_method=f"tcp://127.0.0.1:{port}")
    from recframe.data import RecordBatchDataset, create_dataloader
    from recframe.recipes.train import steps_in_epoch

    dataset = RecordBatchDataset(path, columns=["row_id"], batch_size=10, shuffle=True,
                                 shuffle_buffer_size=16, seed=3, rank=rank, world_size=world)
    result = {}
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        ids = [b.column("row_id").to_pylist() for b in create_dataloader(dataset, 0)]
        gathered = [None] * world
        dist.all_gather_object(gathered, ids)
        result[epoch] = gathered
    result["steps"] = steps_in_epoch(dataset, 0, world)
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def test_each_row_read_exactly_once_per_epoch_across_two_ranks(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"row_id": pa.array(np.arange(103), pa.int64())}), path)
    out = tmp_path / "rows.json"
    mp.spawn(_read_rows_worker, args=(2, free_port(), str(path), str(out)), nprocs=2, join=True)
    result = json.loads(out.read_text())
    orders = []
    for epoch in ("0", "1"):
        per_rank = result[epoch]
        rows = [r for rank_batches in per_rank for batch in rank_batches for r in batch]
        assert sorted(rows) == list(range(103))  # every row exactly once across the job
        assert not set(sum(per_rank[0], [])) & set(sum(per_rank[1], []))
        orders.append(rows)
        # The ranks' batch counts may differ; the trainer runs the smaller count on every rank.
        assert result["steps"] == min(len(b) for b in per_rank)
    assert orders[0] != orders[1]  # epoch-aware reshuffling


# ---- (b) + (c): 2 ranks x B == 1 rank x 2B; distributed metrics == single-process -------------

@pytest.mark.slow
def test_two_ranks_match_one_rank_with_double_batch_and_distributed_eval(tmp_path):
    from recframe.cli.evaluate import main as evaluate_main

    # Each row's history is excluded from its negatives: on two ranks the mask covers the other
    # rank's positives too (global candidates), exactly as one process with the whole batch.
    edits = json.dumps({"data_config.shuffle": False, "data_config.shuffle_buffer_size": None, "train_config.log_step_count_steps": 1,
                        "data_config.exclude_negatives_field": "hist_item_ids"})
    config, paths = write_config(tmp_path, model_dir=tmp_path / "two", num_epochs=1, batch_size=50,
                                 dropout=0.0, extra_train="global_in_batch_negative: true")
    two = torchrun(["-m", "recframe.train", "--pipeline_config", config, "--edit_config_json", edits],
                    cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]

    single_train = tmp_path / "data" / "train_interleaved.parquet"
    interleave_for_two_ranks(paths["train"], str(single_train), 50)
    text = Path(config).read_text().replace(paths["train"], str(single_train))
    text = text.replace(str(tmp_path / "two"), str(tmp_path / "one")).replace("batch_size: 50", "batch_size: 100")
    config_one = tmp_path / "one.config"
    config_one.write_text(text)
    one = subprocess.run([PYTHON, "-m", "recframe.train", "--pipeline_config", str(config_one),
                          "--edit_config_json", edits], cwd=tmp_path, env=clean_env(), capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]

    losses_two, losses_one = train_losses(tmp_path / "two"), train_losses(tmp_path / "one")
    assert len(losses_two) == len(losses_one) == 20
    assert [s for s, _ in losses_two] == [s for s, _ in losses_one]
    np.testing.assert_allclose([v for _, v in losses_two], [v for _, v in losses_one], rtol=1e-4, atol=1e-5)
    # Without global negatives the 2-rank loss would differ (each row sees only B columns).
    assert losses_two[0][1] > 3.0  # ~log(100): contrasted against the 100-row global batch

    # (c) The 2-rank run's evaluation (users split, sums all-reduced) == one process on its
    # checkpoint (saved by rank 0, loaded by a world size of 1).
    distributed_eval = json.loads((tmp_path / "two" / "eval_result.json").read_text())["eval"]
    out = tmp_path / "single_eval.json"
    assert evaluate_main(["--pipeline_config", config, "--checkpoint_path", "latest", "--output", str(out)]) == 0
    single_eval = json.loads(out.read_text())
    for key, value in distributed_eval.items():
        assert single_eval[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert distributed_eval["num_queries"] == 200


@pytest.mark.slow
def test_torchrun_evaluate_matches_single_process(tmp_path):
    from recframe.cli.evaluate import main as evaluate_main
    from recframe.pipeline import Pipeline
    from recframe.recipes.train import train_and_evaluate

    config, _ = write_config(tmp_path, num_epochs=1, batch_size=200, dropout=0.0)
    train_and_evaluate(Pipeline.from_file(config), str(tmp_path / "model"))
    single = tmp_path / "single.json"
    assert evaluate_main(["--pipeline_config", config, "--output", str(single), "--per_query_output",
                          str(tmp_path / "single.parquet")]) == 0
    run = torchrun(["-m", "recframe.evaluate", "--pipeline_config", config, "--output",
                     str(tmp_path / "dist.json"), "--per_query_output", str(tmp_path / "dist.parquet")], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    # Every rank ranks every query: rank 0 writes them all, in the evaluation data's order.
    assert pq.read_table(tmp_path / "dist.parquet").equals(pq.read_table(tmp_path / "single.parquet"))
    a, b = json.loads(single.read_text()), json.loads((tmp_path / "dist.json").read_text())
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
        else:
            assert a[key] == b[key]


# ---- (d) a dead rank: clear error within the timeout, then resume on one process ------------

@pytest.mark.slow
def test_killed_rank_makes_the_other_exit_with_a_clear_message_then_resume(tmp_path):
    config, _ = write_config(tmp_path, num_epochs=500, batch_size=100, dropout=0.0,
                             save_checkpoints_steps=5, log_step_count_steps=50,
                             extra_train="process_group_timeout_seconds: 15")
    model_dir = tmp_path / "model"
    port = free_port()
    procs = [subprocess.Popen([PYTHON, "-m", "recframe.train", "--pipeline_config", config],
                              cwd=tmp_path, env=clean_env(r, 2, port), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not list((model_dir / "checkpoints").glob("ckpt-*.pt")):
            assert time.monotonic() < deadline, "no checkpoint written"
            assert all(p.poll() is None for p in procs), procs[0].stderr.read()
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        elapsed = time.monotonic() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 3, err[-3000:]
    assert elapsed < 15 + 10
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert last.startswith("error: rank 0/2:") and "another rank died" in last, err[-3000:]
    assert "process_group_timeout_seconds" in last and "--continue_train" in last

    saved = json.loads((model_dir / "checkpoints" / "latest.json").read_text())["step"]
    edits = json.dumps({"train_config.num_steps": saved + 3})
    resumed = subprocess.run([PYTHON, "-m", "recframe.train", "--pipeline_config", config, "--continue_train",
                              "--edit_config_json", edits], cwd=tmp_path, env=clean_env(), capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and f"at step {saved}" in resumed.stdout
    assert json.loads((model_dir / "eval_result.json").read_text())["step"] == saved + 3


# ---- gradient accumulation and bf16 (one process) --------------------------------------------

def _pointwise_config(tmp_path: Path, name: str, batch_size: int, extra_train: str = "") -> str:
    config, _ = write_config(tmp_path / name, model_dir=tmp_path / name / "model", num_epochs=1,
                             batch_size=batch_size, dropout=0.0, log_step_count_steps=1, extra_train=extra_train)
    text = Path(config).read_text().replace("losses { softmax_cross_entropy {} }", "losses { binary_cross_entropy {} }")
    text = text.replace("metrics { in_batch_recall_at_k { top_k: 5 } }", "")
    text = text.replace('item_id_field: "item_id"', 'item_id_field: "item_id"\n  label_fields: "label"\n  shuffle: false')
    text = text.replace("  shuffle_buffer_size: 512\n", "")
    Path(config).write_text(text)
    return config


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    from recframe.pipeline import Pipeline
    from recframe.recipes.train import train_and_evaluate

    big = _pointwise_config(tmp_path, "big", 200)
    small = _pointwise_config(tmp_path, "small", 100, "gradient_accumulation_steps: 2")
    result_big = train_and_evaluate(Pipeline.from_file(big), str(tmp_path / "big" / "model"))
    result_small = train_and_evaluate(Pipeline.from_file(small), str(tmp_path / "small" / "model"))
    assert result_big["step"] == result_small["step"] == 10
    a, b = train_losses(tmp_path / "big" / "model"), train_losses(tmp_path / "small" / "model")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 11))
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-5, atol=1e-6)
    assert result_big["eval"]["hit_rate@10"] == pytest.approx(result_small["eval"]["hit_rate@10"], abs=0.01)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    from recframe.pipeline import Pipeline
    from recframe.recipes.train import train_and_evaluate

    config, _ = write_config(tmp_path, num_epochs=1, batch_size=200, extra_train='mixed_precision: "bf16"')
    result = train_and_evaluate(Pipeline.from_file(config), str(tmp_path / "model"))
    losses = train_losses(tmp_path / "model")
    assert result["step"] == 10 and all(np.isfinite(v) for _, v in losses)
    assert result["eval"]["hit_rate@10"] > 10 / 200  # learns something


def test_distributed_config_rules(tmp_path):
    config = write_config(tmp_path)[0]
    from recframe.config import ConfigError
    from recframe.pipeline import Pipeline

    with pytest.raises(ConfigError) as info:
        Pipeline.from_file(config, json.dumps({
            "train_config.mixed_precision": "fp32", "train_config.gradient_accumulation_steps": 0,
            "train_config.process_group_timeout_seconds": 0}))
    text = str(info.value)
    assert "train_config.mixed_precision" in text and "fp32" in text
    assert "train_config.gradient_accumulation_steps" in text
    assert "train_config.process_group_timeout_seconds" in text
    with pytest.raises(ConfigError, match="fp16 with device"):
        Pipeline.from_file(config, json.dumps({"train_config.mixed_precision": "fp16"}))
    with pytest.raises(ConfigError, match="global_in_batch_negative"):
        Pipeline.from_file(config, json.dumps({
            "train_config.global_in_batch_negative": True, "model_config.dssm.in_batch_negative": False}))
