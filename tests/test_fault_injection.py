"""Fault injection: broken inputs, interrupted and diverging runs, damaged checkpoints, hostile
paths. Each test asserts the one-line message (and exit status) and that the outputs are intact:
nothing written by a run that failed its pre-flight, no checkpoint of a diverged model, a
refused resume leaving the run as it was.

Exports (tampered files, digests) are covered by ``test_export_trust.py``; SIGKILL at random
steps of one process and of one rank by ``test_trainer.py`` and ``test_distributed.py``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recframe.cli import common, train

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402

STEPS = '{"train_config.num_steps": 4}'


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """One thread, no PNG curves, no fsync: these runs are about what is refused and kept."""
    import recframe.recipes.train as trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(trainer, "write_curves", lambda *args, **kwargs: None)
    monkeypatch.setattr(trainer, "write_test_plots", lambda *args, **kwargs: None)
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic.write_dataset(tmp_path_factory.mktemp("fault_data"))


def config_over(tmp_path: Path, paths: dict, **options) -> str:
    path = tmp_path / "pipeline.config"
    path.write_text(synthetic.pipeline_config_text(paths, tmp_path / "unused", **options))
    return str(path)


def run(config: str, model_dir: Path, *args: str) -> int:
    return train.main(["--pipeline_config", config, "--model_dir", str(model_dir), *args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def rewrite(src: str, dst: Path, edit) -> str:
    table = edit(pq.read_table(src))
    pq.write_table(table, dst)
    return str(dst)


def replace_column(table: pa.Table, name: str, values) -> pa.Table:
    """``table`` with column ``name`` replaced (a list keeps the column's type)."""
    array = values if isinstance(values, pa.Array) else pa.array(values, table.schema.field(name).type)
    return table.set_column(table.schema.get_field_index(name), name, array)


# ---- pre-flight: bad inputs are found before anything is written -----------------------------

def _missing_column(paths, tmp):
    return {**paths, "valid": rewrite(paths["valid"], tmp / "valid.parquet", lambda t: t.drop_columns(["age"]))}


def _unknown_targets(paths, tmp):
    return {**paths, "valid": rewrite(paths["valid"], tmp / "valid.parquet",
                                      lambda t: replace_column(t, "item_id", [10_000 + i for i in range(t.num_rows)]))}


def _duplicate_items(paths, tmp):
    return {**paths, "items": rewrite(paths["items"], tmp / "items.parquet",
                                      lambda t: pa.concat_tables([t, t.slice(0, 3)]))}


def _empty_catalogue(paths, tmp):
    return {**paths, "items": rewrite(paths["items"], tmp / "items.parquet", lambda t: t.slice(0, 0))}


def _null_catalogue_id(paths, tmp):
    def edit(t):
        ids = t.column("item_id").to_pylist()
        ids[5] = None
        return replace_column(t, "item_id", ids)
    return {**paths, "items": rewrite(paths["items"], tmp / "items.parquet", edit)}


def _empty_train(paths, tmp):
    return {**paths, "train": rewrite(paths["train"], tmp / "train.parquet", lambda t: t.slice(0, 0))}


def _wrong_type_test(paths, tmp):
    return {**paths, "test": rewrite(paths["test"], tmp / "test.parquet",
                                     lambda t: replace_column(t, "age", pa.array([str(v) for v in t.column("age")
                                                                                  .to_pylist()])))}


@pytest.mark.parametrize("break_input, expected", [
    (_missing_column, "column 'age' not found"),
    (_unknown_targets, "eval_input_path: "),
    (_duplicate_items, "item_input_path: "),
    (_empty_catalogue, "item_input_path: "),
    (_null_catalogue_id, "null item id(s), first at row 5"),
    (_empty_train, "train_input_path: "),
    (_wrong_type_test, "test_input_path: "),
], ids=["eval_missing_column", "eval_targets_not_in_catalogue", "duplicate_item_ids", "empty_catalogue",
        "null_catalogue_id", "empty_training_file", "test_column_of_wrong_type"])
def test_bad_inputs_fail_before_model_dir_is_written(data, tmp_path, capsys, break_input, expected):
    paths = break_input(data, tmp_path)
    config = config_over(tmp_path, paths)
    model_dir = tmp_path / "model"
    assert run(config, model_dir, "--edit_config_json", STEPS) == 2
    line = one_line_error(capsys)
    assert expected in line
    assert not model_dir.exists()  # nothing left behind: the same command works once the data is fixed


def test_each_pre_flight_message(data, tmp_path, capsys):
    """The messages name the file, the column and what was expected."""
    cases = {
        _missing_column: ["eval_input_path: ", "column 'age' not found", "available columns"],
        _unknown_targets: ["200 of 200 target item ids in column 'item_id' are not in the item catalogue",
                           "e.g. [10000, 10001"],
        _duplicate_items: ["column 'item_id' has 3 duplicated item id(s), e.g. [0, 1, 2]; expected one row per item"],
        _empty_catalogue: ["item_input_path: ", "has no rows; expected at least one"],
        _empty_train: ["train_input_path: ", "has no rows; expected at least one"],
        _wrong_type_test: ["test_input_path: ", "column 'age' (feature 'age'): expected numbers, got string"],
    }
    for index, (break_input, needles) in enumerate(cases.items()):
        tmp = tmp_path / str(index)
        tmp.mkdir()
        config = config_over(tmp, break_input(data, tmp))
        assert run(config, tmp / "model", "--edit_config_json", STEPS) == 2
        line = one_line_error(capsys)
        for needle in needles:
            assert needle in line, (break_input.__name__, line)


def test_top_k_beyond_the_catalogue_is_refused(data, tmp_path, capsys):
    config = config_over(tmp_path, data)
    edit = '{"eval_config.top_k": [10, 500], "train_config.num_steps": 2}'
    assert run(config, tmp_path / "model", "--edit_config_json", edit) == 2
    line = one_line_error(capsys)
    assert "eval_config.top_k: 500 is more than the 200 items of item_input_path" in line
    assert not (tmp_path / "model").exists()


# ---- values the parser refuses, naming the column and the row --------------------------------

def _train_with(paths, tmp, column, values_of):
    return {**paths, "train": rewrite(paths["train"], tmp / "train.parquet",
                                      lambda t: replace_column(t, column, values_of(t)))}


def test_nan_in_a_bucketized_numeric_feature(data, tmp_path, capsys):
    def ages(t):
        values = [float(v) for v in t.column("age").to_pylist()]
        values[3] = float("nan")
        return pa.array(values, pa.float64())
    paths = {**data, "train": rewrite(data["train"], tmp_path / "train.parquet",
                                      lambda t: t.set_column(t.schema.get_field_index("age"), "age", ages(t)))}
    config = config_over(tmp_path, paths, num_epochs=1, extra_train="", batch_size=2000)
    assert run(config, tmp_path / "model", "--edit_config_json", STEPS) == 2
    line = one_line_error(capsys)
    assert "feature 'age' (column 'age'): 1 non-finite value(s), first nan at " in line
    assert "train.parquet row 3;" in line
    assert "expected finite numbers (leave a value null to use default_value)" in line


def test_negative_and_all_zero_sample_weights(data, tmp_path, capsys):
    weights = np.ones(2000, dtype=np.float32)
    weights[7] = -1.0
    paths = {**data, "train": rewrite(data["train"], tmp_path / "train.parquet",
                                      lambda t: t.append_column("w", pa.array(weights)))}
    config = config_over(tmp_path, paths, batch_size=2000)
    edit = '{"data_config.sample_weight_field": "w", "train_config.num_steps": 1}'
    assert run(config, tmp_path / "model", "--edit_config_json", edit) == 2
    line = one_line_error(capsys)
    assert "column 'w': 1 value(s) outside the expected range, first -1 at " in line and "expected values >= 0" in line
    assert "train.parquet row 7;" in line

    zeros = tmp_path / "zeros"
    zeros.mkdir()
    paths = {**data, "train": rewrite(data["train"], zeros / "train.parquet",
                                      lambda t: t.append_column("w", pa.array(np.zeros(2000, np.float32))))}
    config = config_over(zeros, paths, batch_size=2000)
    assert run(config, zeros / "model", "--edit_config_json", edit) == 2
    assert "every sample weight of the 2000 rows is 0" in one_line_error(capsys)


def test_bce_labels_outside_zero_one(data, tmp_path, capsys):
    labels = np.ones(2000, dtype=np.float32)
    labels[11] = 3.0
    def with_labels(t):
        return t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels))
    paths = {**data, "train": rewrite(data["train"], tmp_path / "train.parquet", with_labels)}
    text = synthetic.pipeline_config_text(paths, tmp_path / "unused", batch_size=2000)
    text = text.replace("losses { softmax_cross_entropy {} }", "losses { binary_cross_entropy {} }")
    text = text.replace('  item_id_field: "item_id"', '  item_id_field: "item_id"\n  label_fields: "label"')
    config = tmp_path / "bce.config"
    config.write_text(text.replace("metrics { in_batch_recall_at_k { top_k: 5 } }", ""))
    edit = '{"model_config.dssm.in_batch_negative": false, "train_config.num_steps": 1}'
    assert run(str(config), tmp_path / "model", "--edit_config_json", edit) == 2
    line = one_line_error(capsys)
    assert "column 'label': 1 value(s) outside the expected range, first 3 at " in line and "train.parquet row 11;" in line
    assert "expected values in [0, 1]" in line


# ---- a diverging run stops with its last good checkpoint ------------------------------------

def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, capsys, monkeypatch):
    from recframe.models.match_model import MatchModel

    compute_loss = MatchModel.compute_loss
    calls = {"n": 0}

    def diverging(self, outputs, batch):
        losses = compute_loss(self, outputs, batch)
        calls["n"] += 1
        if calls["n"] > 6:  # steps 7.. diverge
            losses = {**losses, "total": losses["total"] * float("nan")}
        return losses

    monkeypatch.setattr(MatchModel, "compute_loss", diverging)
    config = config_over(tmp_path, data, num_epochs=1, save_checkpoints_steps=5, log_step_count_steps=100)
    model_dir = tmp_path / "model"
    assert run(config, model_dir) == 2
    line = one_line_error(capsys)
    assert "the training loss is nan in steps 6..10 (epoch 0)" in line
    assert "the last good one is" in line and "ckpt-00000005.pt" in line
    saved = sorted(p.name for p in (model_dir / "checkpoints").glob("ckpt-*.pt"))
    assert saved == ["ckpt-00000005.pt"]  # no checkpoint of a diverged step
    state = torch.load(model_dir / "checkpoints" / "ckpt-00000005.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# ---- resume: refused mismatches leave the run as it was; damaged checkpoints -----------------

@pytest.fixture
def stopped_mid_epoch(data, tmp_path):
    """A run stopped after step 5 of the 20 of epoch 0, with a checkpoint of every step."""
    config = config_over(tmp_path, data, num_epochs=1, save_checkpoints_steps=1, keep_checkpoint_max=0,
                         log_step_count_steps=100)
    model_dir = tmp_path / "model"
    assert run(config, model_dir, "--edit_config_json", '{"train_config.num_steps": 5}') == 0
    return config, model_dir


def test_resume_with_another_batch_size_is_refused_until_restart_epoch(stopped_mid_epoch, capsys):
    config, model_dir = stopped_mid_epoch
    # num_steps 5 ended the run "finished": resume with more steps, and a changed batch size.
    before = (model_dir / "pipeline.config").read_bytes()
    capsys.readouterr()
    edit = '{"train_config.num_steps": 8, "data_config.batch_size": 50}'
    assert run(config, model_dir, "--continue_train", "--edit_config_json", edit) == 2
    line = one_line_error(capsys)
    assert "saved in the middle of epoch 0" in line and "batch_size 100 -> 50" in line and "--restart_epoch" in line
    assert (model_dir / "pipeline.config").read_bytes() == before  # the run's config still matches its checkpoints
    assert run(config, model_dir, "--continue_train", "--restart_epoch", "--edit_config_json", edit) == 0
    out = capsys.readouterr().out
    assert "epoch 0 restarts from its first batch" in out
    assert json.loads((model_dir / "eval_result.json").read_text())["step"] == 8


def test_resume_with_changed_training_files_is_refused(stopped_mid_epoch, data, capsys):
    config, model_dir = stopped_mid_epoch
    train_copy = model_dir.parent / "train_copy.parquet"
    table = pq.read_table(data["train"])
    pq.write_table(table.slice(0, 1500), train_copy)
    edit = json.dumps({"train_config.num_steps": 8, "train_input_path": str(train_copy)})
    capsys.readouterr()
    assert run(config, model_dir, "--continue_train", "--edit_config_json", edit) == 2
    line = one_line_error(capsys)
    assert "training files added" in line and "train_copy.parquet" in line


def test_truncated_latest_checkpoint_falls_back_to_the_previous(stopped_mid_epoch, capsys):
    config, model_dir = stopped_mid_epoch
    latest = model_dir / "checkpoints" / "ckpt-00000005.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    capsys.readouterr()
    assert run(config, model_dir, "--continue_train", "--edit_config_json", '{"train_config.num_steps": 6}') == 0
    out = capsys.readouterr().out
    assert "ckpt-00000005.pt' cannot be read (truncated or damaged?)" in out
    assert "resuming from the previous checkpoint" in out and "ckpt-00000004.pt" in out
    assert "resumed from" in out and "at step 4" in out


def test_every_checkpoint_damaged_is_one_line(stopped_mid_epoch, capsys):
    config, model_dir = stopped_mid_epoch
    for path in (model_dir / "checkpoints").glob("*.pt"):
        path.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert run(config, model_dir, "--continue_train", "--edit_config_json", '{"train_config.num_steps": 6}') == 2
    line = one_line_error(capsys)
    assert "no checkpoint in" in line and "can be read" in line and "ckpt-00000001.pt" in line


def test_checkpoint_of_another_model_shape_is_one_line(stopped_mid_epoch, capsys):
    config, model_dir = stopped_mid_epoch
    text = Path(config).read_text().replace("hidden_units: [32]", "hidden_units: [24]")
    Path(config).write_text(text)
    capsys.readouterr()
    assert run(config, model_dir, "--continue_train", "--edit_config_json", '{"train_config.num_steps": 6}') == 2
    line = one_line_error(capsys)
    assert "does not fit the model the config builds" in line
    assert "(24, " in line and "(32, " in line


# ---- paths, devices, environment: one line, exit 2 ------------------------------------------

def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(data, tmp_path, capsys, monkeypatch):
    import recframe.training.checkpoint as checkpoint

    real_save, saves = torch.save, {"n": 0}

    def filling_disk(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 3:  # the third checkpoint: half written, then the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", filling_disk)
    config = config_over(tmp_path, data, num_epochs=1, save_checkpoints_steps=2, log_step_count_steps=100)
    model_dir = tmp_path / "model"
    assert run(config, model_dir) == 2
    line = one_line_error(capsys)
    assert line == f"error: No space left on device: '{model_dir / 'checkpoints' / 'ckpt-00000006.pt'}'"
    folder = model_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt-00000002.pt", "ckpt-00000004.pt", "latest.json"]
    assert json.loads((folder / "latest.json").read_text())["step"] == 4
    assert torch.load(folder / "ckpt-00000004.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert run(config, model_dir, "--continue_train", "--edit_config_json", '{"train_config.num_steps": 6}') == 0
    assert "at step 4" in capsys.readouterr().out


def test_model_dir_under_a_file(data, tmp_path, capsys):
    config = config_over(tmp_path, data)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert run(config, blocker / "model", "--edit_config_json", STEPS) == 2
    assert f"model_dir '{blocker / 'model'}': '{blocker}' is a file, expected a directory" in one_line_error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_model_dir(data, tmp_path, capsys):
    config = config_over(tmp_path, data)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert run(config, locked / "model", "--edit_config_json", STEPS) == 2
        assert "is not writable" in one_line_error(capsys)
    finally:
        locked.chmod(0o700)


def test_unavailable_device(data, tmp_path, capsys):
    config = config_over(tmp_path, data)
    assert run(config, tmp_path / "model", "--device", "cuda:7", "--edit_config_json", STEPS) == 2
    assert "cuda" in one_line_error(capsys)
    assert not (tmp_path / "model").exists()


def test_exit_code_policy(capsys):
    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/ckpt-00000010.pt")

    assert common.run(full_disk) == 2
    assert one_line_error(capsys) == "error: No space left on device: '/runs/x/checkpoints/ckpt-00000010.pt'"

    def interrupted():
        raise KeyboardInterrupt

    assert common.run(interrupted) == 130
    assert capsys.readouterr().err.strip() == "interrupted"

    def bug():
        return {}["missing"]

    assert common.run(bug) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'missing'" in err
    assert err.strip().splitlines()[-1].startswith("error: this is a bug in recframe")


# ---- Ctrl-C: a checkpoint of the last finished step, exit 130, resume as if uninterrupted ----

SLOW_TRAIN = """
import runpy, sys, time
import recframe.recipes.train as trainer

_create = trainer.create_dataloader

def slow_dataloader(*args, **kwargs):
    for batch in _create(*args, **kwargs):
        time.sleep(0.1)
        yield batch

trainer.create_dataloader = slow_dataloader
sys.argv[0] = "recframe.train"
runpy.run_module("recframe.train", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ctrl_c_saves_a_checkpoint_and_resumes_exactly(data, tmp_path, num_workers):
    config = config_over(tmp_path, data, num_epochs=1, save_checkpoints_steps=100, log_step_count_steps=4,
                         num_workers=num_workers)
    model_dir = tmp_path / "interrupted"
    env = {**os.environ, "RECFRAME_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, "--pipeline_config", config, "--model_dir",
                             str(model_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (model_dir / "log.jsonl").exists():
            time.sleep(0.05)
        time.sleep(0.8)  # a few steps in, before any periodic checkpoint
        os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: training stopped at step ") and "resume with --continue_train" in last
    step = int(last.split("step ")[1].split(";")[0])
    assert 0 < step < 20 and (model_dir / "checkpoints" / f"ckpt-{step:08d}.pt").exists()

    assert run(config, model_dir, "--continue_train") == 0
    reference = tmp_path / "reference"
    assert run(config, reference) == 0
    resumed = json.loads((model_dir / "eval_result.json").read_text())
    expected = json.loads((reference / "eval_result.json").read_text())
    for split in ("eval", "test"):
        for key, value in expected[split].items():
            assert resumed[split][key] == pytest.approx(value, abs=1e-6), (split, key)


def test_malformed_edit_config_json_is_blamed_on_the_flag(data, tmp_path, capsys):
    config = config_over(tmp_path, data)
    assert run(config, tmp_path / "model", "--edit_config_json", '{"train_config.num_steps": ',
               "--train_input_path", data["train"]) == 2
    line = one_line_error(capsys)
    assert "(--edit_config_json)" in line and "JSON" in line
    assert not (tmp_path / "model").exists()


def test_a_required_input_path_left_out_names_its_field(data, tmp_path, capsys):
    config = config_over(tmp_path, data)
    Path(config).write_text("\n".join(line for line in Path(config).read_text().splitlines()
                                      if not line.startswith("eval_input_path")))
    assert run(config, tmp_path / "model", "--edit_config_json", STEPS) == 2
    assert "eval_input_path" in one_line_error(capsys)
    assert not (tmp_path / "model").exists()


def test_bad_output_paths_are_refused_before_the_work(tmp_path, capsys):
    from recframe.files import OutputPathError, check_output_path

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match=r"--output '.*a_file/out.json': '.*a_file' is a file, expected a directory"):
        check_output_path(blocker / "out.json", "--output")
    with pytest.raises(OutputPathError, match="is a directory, expected a file path"):
        check_output_path(tmp_path, "--output")
    with pytest.raises(OutputPathError, match="is a file, expected a directory path"):
        check_output_path(blocker, "--export_dir", directory=True)
    check_output_path(tmp_path / "new" / "deeper" / "out.json", "--output")  # creatable: fine, nothing created
    assert not (tmp_path / "new").exists()


def test_evaluate_refuses_a_bad_output_before_evaluating(data, tmp_path, capsys, monkeypatch):
    from recframe.cli import evaluate
    import recframe.recipes.evaluate as recipe

    config = config_over(tmp_path, data, num_epochs=1)
    assert run(config, tmp_path / "model", "--edit_config_json", STEPS) == 0
    monkeypatch.setattr(recipe, "evaluate_model", lambda *a, **k: pytest.fail("evaluated before checking --output"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    capsys.readouterr()
    assert evaluate.main(["--pipeline_config", config, "--model_dir", str(tmp_path / "model"),
                          "--output", str(blocker / "metrics.json")]) == 2
    assert "--output" in one_line_error(capsys)
