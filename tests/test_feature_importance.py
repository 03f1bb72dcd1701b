"""Feature importance from variational dropout: the trainer's feature_importance records
(log.jsonl and TensorBoard) and ``recframe feature-importance`` (CSV, PNG, pruned config).

One module-scoped run (1 epoch of 20 steps on the synthetic data, variational dropout on the
user and item groups) serves the logging tests and the command's checks against a trained
checkpoint; checkpoints with hand-set drop logits pin the ranking and the pruning.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from recframe.cli import feature_importance as fi_cli
from recframe.cli import train
from recframe.config import load_pipeline_config
from recframe.pipeline import Pipeline
from recframe.training.checkpoint import load_checkpoint

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
USER = ["user_id", "segment", "age", "hist_item_ids"]
ITEM = ["item_id", "category", "price"]
DROPOUT = "  variational_dropout { regularization_lambda: 0.05 initial_drop_probability: 0.3 EXTRA}\n  dssm {"


def write_config(tmp: Path, data: dict, extra: str = "", dropout: bool = True, **options) -> str:
    text = synthetic.pipeline_config_text(data, tmp / "model", **options)
    if dropout:
        text = text.replace("  dssm {", DROPOUT.replace("EXTRA", extra))
    path = tmp / "pipeline.config"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic.write_dataset(tmp_path_factory.mktemp("fi_data"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """(config, model_dir): 20 steps, a train record every 3 steps, evaluations at 10 and 20."""
    tmp = tmp_path_factory.mktemp("fi_trained")
    config = write_config(tmp, data, num_epochs=1, log_step_count_steps=3, eval_every_n_steps=10)
    assert train.main(["--pipeline_config", config]) == 0
    return config, tmp / "model"


def records(model_dir: Path, kind: str) -> list[dict]:
    lines = (model_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def model_from(config: str, checkpoint: Path):
    model = Pipeline.from_file(config).build_model()
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return model


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- the training log --------------------------------------------------------------------------

def test_training_logs_every_features_keep_probability(trained):
    config, model_dir = trained
    logged = records(model_dir, "feature_importance")
    # one record per log step (3, 6, ...) and evaluation (10, 20), never two for one step
    assert [r["step"] for r in logged] == [3, 6, 9, 10, 12, 15, 18, 20]
    assert all(r["epoch"] == 0 for r in logged)
    names = [f"user/{f}" for f in USER] + [f"item/{f}" for f in ITEM]
    for record in logged:
        assert [k for k in record if k not in ("type", "step", "epoch", "time")] == names
        assert all(0.0 < record[k] < 1.0 for k in names)
    assert logged[0]["user/user_id"] != pytest.approx(0.7, abs=1e-9)  # it trained from 1 - 0.3
    # the last record is the final model's keep probabilities (the latest checkpoint, step 20)
    latest = model_dir / "checkpoints" / json.loads((model_dir / "checkpoints" / "latest.json").read_text())["path"]
    final = model_from(config, latest).feature_importance()
    assert {f"{g}/{f}": v for g, fs in final.items() for f, v in fs.items()} == \
        {k: pytest.approx(logged[-1][k], abs=1e-7) for k in names}
    # the other records are untouched: no importance among the train or eval values
    assert not [k for r in records(model_dir, "train") + records(model_dir, "eval") for k in r if k in names]


def test_tensorboard_has_the_keep_probabilities(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, model_dir = trained
    acc = EventAccumulator(str(model_dir / "tensorboard"))
    acc.Reload()
    tag = "feature_importance/user/hist_item_ids"
    assert tag in acc.Tags()["scalars"]
    logged = records(model_dir, "feature_importance")
    assert [(e.step, e.value) for e in acc.Scalars(tag)] == [
        (r["step"], pytest.approx(r["user/hist_item_ids"], rel=1e-6)) for r in logged]


def test_no_records_without_variational_dropout(tmp_path, data, monkeypatch):
    import recframe.recipes.train as trainer

    monkeypatch.setattr(trainer, "write_curves", lambda *args, **kwargs: None)
    config = write_config(tmp_path, data, dropout=False, num_epochs=1, log_step_count_steps=5,
                          extra_train="num_steps: 5")
    assert train.main(["--pipeline_config", config]) == 0
    assert records(tmp_path / "model", "train") and not records(tmp_path / "model", "feature_importance")


# --- recframe feature-importance ---------------------------------------------------------------

def test_command_writes_the_models_keep_probabilities_ranked(trained, tmp_path, capsys):
    config, model_dir = trained
    out = tmp_path / "importance"
    assert fi_cli.main(["--pipeline_config", config, "--output_dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["feature_importance.csv", "feature_importance.png"]
    assert (out / "feature_importance.png").read_bytes().startswith(PNG_SIGNATURE)
    ranking = model_from(config, model_dir / "checkpoints" / "best.pt").feature_ranking()
    rows = read_csv(out / "feature_importance.csv")
    assert [(r["group"], r["feature"], float(r["keep_probability"]), int(r["rank"])) for r in rows] == [
        (group, feature, keep, rank) for group, features in ranking.items()
        for rank, (feature, keep) in enumerate(features, start=1)]
    for group in ("user", "item"):
        keeps = [float(r["keep_probability"]) for r in rows if r["group"] == group]
        assert keeps == sorted(keeps, reverse=True) and len(keeps) == len(USER if group == "user" else ITEM)
    printed = capsys.readouterr().out
    assert "group 'user':" in printed and f"wrote {out / 'feature_importance.csv'}" in printed
    # the default output directory is MODEL_DIR/feature_importance
    assert fi_cli.main(["--pipeline_config", config, "--checkpoint_path", "latest"]) == 0
    assert (model_dir / "feature_importance" / "feature_importance.csv").is_file()


def _checkpoint_with_logits(config: str, path: Path, user: list[float], item: list[float]) -> Path:
    """A checkpoint of a fresh model whose drop logits are set by hand."""
    torch.manual_seed(0)
    model = Pipeline.from_file(config).build_model()
    with torch.no_grad():
        model.user_tower.dropouts["user"].drop_logit.copy_(torch.tensor(user))
        model.item_tower.dropouts["item"].drop_logit.copy_(torch.tensor(item))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "step": 7}, path)
    return path


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_top_k_writes_a_pruned_config_that_loads(data, tmp_path, capsys):
    # keep probabilities: user_id 0.4, segment 0.9, age 0.2, hist_item_ids 0.7; item_id 0.8, category 0.1, price 0.5
    config = write_config(tmp_path, data)
    checkpoint = _checkpoint_with_logits(config, tmp_path / "set.pt",
                                         [_logit(0.6), _logit(0.1), _logit(0.8), _logit(0.3)],
                                         [_logit(0.2), _logit(0.9), _logit(0.5)])
    out = tmp_path / "out"
    assert fi_cli.main(["--pipeline_config", config, "--checkpoint_path", str(checkpoint), "--output_dir", str(out),
                        "--top_k", "2"]) == 0
    rows = read_csv(out / "feature_importance.csv")
    assert [(r["group"], r["feature"], r["rank"]) for r in rows] == [
        ("user", "segment", "1"), ("user", "hist_item_ids", "2"), ("user", "user_id", "3"), ("user", "age", "4"),
        ("item", "item_id", "1"), ("item", "price", "2"), ("item", "category", "3")]
    assert [float(r["keep_probability"]) for r in rows] == pytest.approx([0.9, 0.7, 0.4, 0.2, 0.8, 0.5, 0.1])
    assert "(pruned)" in capsys.readouterr().out
    pruned_path = out / "pipeline_pruned.config"
    pruned = load_pipeline_config(str(pruned_path))
    groups = {g.group_name: list(g.feature_names) for g in pruned.model_config.feature_groups}
    assert groups == {"user": ["segment", "hist_item_ids"], "item": ["item_id", "price"]}  # the config's order
    features = [getattr(f, f.WhichOneof("feature")).feature_name for f in pruned.feature_configs]
    assert features == ["segment", "hist_item_ids", "item_id", "price"]
    assert pruned.model_dir == str(tmp_path / "model") + "_top2"
    assert pruned.model_config.variational_dropout == load_pipeline_config(config).model_config.variational_dropout
    # everything else is the original config's
    original = load_pipeline_config(config)
    for field in ("train_config", "eval_config", "data_config", "train_input_path", "item_input_path"):
        assert getattr(pruned, field) == getattr(original, field)
    pipeline = Pipeline.from_file(str(pruned_path))  # loads and validates
    model = pipeline.build_model()
    assert model.feature_importance() == {"user": {"segment": pytest.approx(0.7), "hist_item_ids": pytest.approx(0.7)},
                                          "item": {"item_id": pytest.approx(0.7), "price": pytest.approx(0.7)}}


def test_top_1_needs_clear_variational_dropout(data, tmp_path, capsys):
    config = write_config(tmp_path, data)
    checkpoint = _checkpoint_with_logits(config, tmp_path / "set.pt", [0.0, -1.0, 1.0, 2.0], [1.0, -2.0, 0.0])
    out = tmp_path / "out"
    args = ["--pipeline_config", config, "--checkpoint_path", str(checkpoint), "--output_dir", str(out), "--top_k", "1"]
    assert fi_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--top_k 1 leaves no DEEP group with two or more features" in err and "--clear_variational_dropout" in err
    assert not out.exists()  # nothing written
    assert fi_cli.main(args + ["--clear_variational_dropout"]) == 0
    pruned = Pipeline.from_file(str(out / "pipeline_pruned.config")).config
    assert not pruned.model_config.HasField("variational_dropout")
    assert {g.group_name: list(g.feature_names) for g in pruned.model_config.feature_groups} == {
        "user": ["segment"], "item": ["category"]}


def test_a_rerun_leaves_no_earlier_pruned_config_and_clear_needs_top_k(data, tmp_path, capsys):
    config = write_config(tmp_path, data)
    checkpoint = _checkpoint_with_logits(config, tmp_path / "set.pt", [0.0, -1.0, 1.0, 2.0], [1.0, -2.0, 0.0])
    out = tmp_path / "out"
    args = ["--pipeline_config", config, "--checkpoint_path", str(checkpoint), "--output_dir", str(out)]
    assert fi_cli.main(args + ["--top_k", "2"]) == 0
    assert (out / "pipeline_pruned.config").is_file()
    capsys.readouterr()
    assert fi_cli.main(args + ["--clear_variational_dropout"]) == 2
    assert "--clear_variational_dropout: only applies to the pruned config, which needs --top_k" in capsys.readouterr().err
    assert fi_cli.main(args) == 0  # no --top_k: the earlier run's pruned config goes
    assert sorted(p.name for p in out.iterdir()) == ["feature_importance.csv", "feature_importance.png"]


def test_embedding_wise_importance_is_the_mean_keep_of_the_dimensions(data, tmp_path):
    config = write_config(tmp_path, data, extra="embedding_wise: true ")
    pipeline = Pipeline.from_file(config)
    torch.manual_seed(0)
    model = pipeline.build_model()
    dims = {"user": [16, 8, 4, 16], "item": [16, 8, 1]}
    for group, tower in (("user", model.user_tower), ("item", model.item_tower)):
        logits = tower.dropouts[group].drop_logit
        assert logits.shape == (sum(dims[group]),)
        with torch.no_grad():
            logits.copy_(torch.linspace(-3, 3, logits.shape[0]))
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "ew.pt")
    out = tmp_path / "out"
    assert fi_cli.main(["--pipeline_config", config, "--checkpoint_path", str(tmp_path / "ew.pt"),
                        "--output_dir", str(out)]) == 0
    rows = read_csv(out / "feature_importance.csv")
    expected = {}
    for group, names in (("user", USER), ("item", ITEM)):
        keep = 1 - torch.sigmoid(torch.linspace(-3, 3, sum(dims[group])))
        for name, part in zip(names, torch.split(keep, dims[group])):
            expected[(group, name)] = part.mean().item()
    assert {(r["group"], r["feature"]): float(r["keep_probability"]) for r in rows} == pytest.approx(expected)
    # the logits rise along the group, so the first feature is kept most
    assert [r["feature"] for r in rows] == USER + ITEM


def test_config_without_variational_dropout_is_a_clear_error(data, tmp_path, capsys):
    config = write_config(tmp_path, data, dropout=False)
    out = tmp_path / "out"
    assert fi_cli.main(["--pipeline_config", config, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {config}: model_config.variational_dropout: not set, expected a variational_dropout message" in err
    assert not out.exists()


def test_output_dir_checked_before_the_work(trained, tmp_path, capsys):
    config, _ = trained
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert fi_cli.main(["--pipeline_config", config, "--output_dir", str(blocker)]) == 2
    assert "--output_dir" in capsys.readouterr().err and blocker.read_text() == "x"
    assert fi_cli.main(["--pipeline_config", config, "--output_dir", str(tmp_path / "o"), "--top_k", "0"]) == 2
    assert "--top_k: got 0" in capsys.readouterr().err
