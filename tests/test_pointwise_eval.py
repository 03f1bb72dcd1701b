"""Pointwise evaluation metrics (eval_config.pointwise_metrics): held-out AUC and accuracy of a
binary_cross_entropy model, computed by recframe's evaluation on labelled rows.

Values are checked against a hand computation (AUC by counting pairs, ties 1/2; accuracy by
thresholding sigmoid(logit)), also in batches of a few rows, with DataLoader workers, and under
torchrun; a training run selects its best checkpoint and stops early on ``auc``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recframe.config import parse_pipeline_config, validate_pipeline_config
from recframe.config.names import eval_metric_names
from recframe.data.inputs import DataError
from recframe.features import BatchParser
from recframe.metrics.pointwise import PointwiseMetrics
from recframe.pipeline import Pipeline
from recframe.protos import eval_pb2
from recframe.recipes.evaluate import evaluate_model

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402
from launch import torchrun  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BOTH = "pointwise_metrics { auc {} } pointwise_metrics { accuracy {} }"


def pair_count_auc(scores: list[float], labels: list[int]) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2: counted pair by pair."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---- the metrics themselves ------------------------------------------------------------------

def test_hand_computed_auc_and_accuracy_with_ties_and_thresholds():
    logits = [2.0, -1.0, 0.5, 0.5, -3.0]
    labels = [1.0, 0.0, 0.8, 0.0, 0.2]  # positive when > 0.5
    # Pairs (positive, negative): 2 beats all 3; 0.5 beats -1 and -3 and ties 0.5: (3 + 2.5) / 6.
    config = [eval_pb2.PointwiseMetricConfig(auc={}), eval_pb2.PointwiseMetricConfig(accuracy={})]
    got = PointwiseMetrics(config).compute(torch.tensor(logits), torch.tensor(labels))
    assert got["auc"] == pytest.approx(5.5 / 6, abs=1e-7)
    assert got["auc"] == pytest.approx(pair_count_auc(logits, [y > 0.5 for y in labels]), abs=1e-7)
    # sigmoid > 0.5: rows 0, 2, 3 -> right on 0, 1, 2, 4, wrong on 3.
    assert got["accuracy"] == pytest.approx(4 / 5)
    # threshold 0.9: sigmoid(2) = 0.88 is now a 0 -> rows 1, 3, 4 right.
    strict = PointwiseMetrics([eval_pb2.PointwiseMetricConfig(accuracy={"threshold": 0.9})])
    assert strict.compute(torch.tensor(logits), torch.tensor(labels)) == {"accuracy": pytest.approx(3 / 5)}


def test_auc_ranks_large_logits_that_sigmoid_would_round_to_one():
    # sigmoid(40) == sigmoid(39) == 1.0 even in float64: AUC by probabilities would tie them (0.75).
    metrics = PointwiseMetrics([eval_pb2.PointwiseMetricConfig(auc={})])
    assert metrics.compute(torch.tensor([40.0, 39.0, -1.0]), torch.tensor([1, 0, 0])) == {"auc": 1.0}


def test_auc_of_one_class_is_refused():
    metrics = PointwiseMetrics([eval_pb2.PointwiseMetricConfig(auc={})])
    with pytest.raises(ValueError, match="AUC needs positive and negative rows, got 3 positive of 3"):
        metrics.compute(torch.tensor([0.1, 0.2, 0.3]), torch.ones(3), source="x.parquet")


# ---- labelled synthetic data and a BCE config -------------------------------------------------

def relabel(path: str, out: str, prices: np.ndarray, seed: int) -> str:
    """Rows with a random half of their items replaced by an item of another cluster, label 0
    (the others keep label 1): both classes, and a label the towers can learn."""
    table = pq.read_table(path)
    rng = np.random.default_rng(seed)
    items = table.column("item_id").to_numpy().copy()
    negative = rng.random(len(items)) < 0.5
    items[negative] = (items[negative] + 1 + rng.integers(0, synthetic.NUM_CLUSTERS - 1, negative.sum())) \
        % synthetic.NUM_ITEMS
    table = table.set_column(table.schema.get_field_index("item_id"), "item_id", pa.array(items, pa.int64()))
    table = table.set_column(table.schema.get_field_index("category"), "category",
                             pa.array([f"c{i % synthetic.NUM_CLUSTERS}" for i in items]))
    table = table.set_column(table.schema.get_field_index("price"), "price", pa.array(prices[items], pa.float64()))
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array((~negative).astype(np.int64)))
    pq.write_table(table, out)
    return out


def labelled_data(tmp: Path) -> dict[str, str]:
    paths = synthetic.write_dataset(tmp / "raw")
    prices = pq.read_table(paths["items"]).column("price").to_numpy()
    out = {"items": paths["items"]}
    for i, name in enumerate(("train", "valid", "test")):
        out[name] = relabel(paths[name], str(tmp / f"{name}.parquet"), prices, seed=i)
    return out


def bce_config_text(paths: dict[str, str], model_dir, *, pointwise: str = BOTH, best_metric: str = "auc",
                    extra_eval: str = "", **options) -> str:
    text = synthetic.pipeline_config_text(paths, model_dir, extra_eval=f"{pointwise}\n  {extra_eval}", **options)
    text = text.replace("losses { softmax_cross_entropy {} }", "losses { binary_cross_entropy {} }")
    text = text.replace("metrics { in_batch_recall_at_k { top_k: 5 } }", "metrics { auc {} }")
    text = text.replace('  item_id_field: "item_id"', '  item_id_field: "item_id"\n  label_fields: "label"')
    text = text.replace("    temperature: 0.1\n", "    temperature: 0.1\n    in_batch_negative: false\n")
    return text.replace('best_metric: "hit_rate@10"', f'best_metric: "{best_metric}"')


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return labelled_data(tmp_path_factory.mktemp("pointwise_data"))


def pipeline_of(text: str, edit: dict | None = None) -> Pipeline:
    return Pipeline.from_string(text, json.dumps(edit) if edit else None)


def hand_scores(model, pipeline: Pipeline, path: str) -> tuple[list[float], list[int]]:
    """Each row's logit computed here: the towers over the whole file at once, the dot product
    of the (normalised) embeddings over the temperature."""
    table = pq.read_table(path)
    with torch.no_grad():
        user = model.user_embedding(BatchParser(pipeline.user_features)(table))
        item = model.item_embedding(BatchParser(pipeline.item_features)(table))
    logits = ((user * item).sum(1) / 0.1).tolist()
    return logits, [int(v > 0.5) for v in table.column("label").to_pylist()]


# ---- evaluation = hand computation, whatever the batching ------------------------------------

def test_evaluation_reports_hand_computed_auc_and_accuracy(data, tmp_path):
    pipeline = pipeline_of(bce_config_text(data, tmp_path / "m", batch_size=7))
    torch.manual_seed(0)
    model = pipeline.build_model().eval()
    logits, labels = hand_scores(model, pipeline, data["valid"])
    assert 0 < sum(labels) < len(labels)
    metrics = evaluate_model(model, pipeline, torch.device("cpu"))
    assert metrics["auc"] == pytest.approx(pair_count_auc(logits, labels), abs=1e-6)
    right = sum((sigmoid(x) > 0.5) == bool(y) for x, y in zip(logits, labels))
    assert metrics["accuracy"] == pytest.approx(right / len(labels), abs=1e-9)
    assert metrics["num_queries"] == len(labels) == synthetic.NUM_USERS
    # The retrieval metrics are those of the same model without pointwise metrics.
    plain = pipeline_of(bce_config_text(data, tmp_path / "m", pointwise="", best_metric="hit_rate@10", batch_size=7))
    retrieval = evaluate_model(model, plain, torch.device("cpu"))
    assert "auc" not in retrieval and "accuracy" not in retrieval
    assert {k: v for k, v in metrics.items() if k not in ("auc", "accuracy")} == retrieval
    # One batch, or two workers parsing batches of 7: the same values.
    for edit in ({"data_config.batch_size": 500}, {"data_config.num_workers": 2}):
        again = evaluate_model(model, pipeline_of(bce_config_text(data, tmp_path / "m", batch_size=7), edit),
                               torch.device("cpu"))
        assert again["auc"] == pytest.approx(metrics["auc"], abs=1e-7), edit
        assert again["accuracy"] == metrics["accuracy"], edit
    # The names the validator accepts for best_metric are the names reported.
    assert {"auc", "accuracy"} <= set(eval_metric_names(pipeline.config.eval_config))
    assert set(eval_metric_names(pipeline.config.eval_config)) <= set(metrics)


def test_only_the_asked_metric_is_reported(data, tmp_path):
    pipeline = pipeline_of(bce_config_text(data, tmp_path / "m", pointwise="pointwise_metrics { accuracy {} }",
                                           best_metric="accuracy"))
    torch.manual_seed(0)
    metrics = evaluate_model(pipeline.build_model(), pipeline, torch.device("cpu"))
    assert "accuracy" in metrics and "auc" not in metrics


# ---- the pre-flight: columns and classes ----------------------------------------------------

def test_preflight_needs_the_label_and_item_columns_and_two_classes(data, tmp_path):
    from recframe.data.preflight import check_inputs

    text = bce_config_text(data, tmp_path / "m")
    check_inputs(pipeline_of(text))  # the labelled files pass
    no_label = str(tmp_path / "no_label.parquet")
    pq.write_table(pq.read_table(data["valid"]).drop(["label"]), no_label)
    with pytest.raises(DataError, match="label"):
        check_inputs(pipeline_of(text, {"eval_input_path": no_label}))
    no_item_feature = str(tmp_path / "no_category.parquet")
    pq.write_table(pq.read_table(data["valid"]).drop(["category"]), no_item_feature)
    with pytest.raises(DataError, match="category"):
        check_inputs(pipeline_of(text, {"eval_input_path": no_item_feature}))
    # Without pointwise metrics the evaluation rows need neither.
    check_inputs(pipeline_of(bce_config_text(data, tmp_path / "m", pointwise="", best_metric="hit_rate@10"),
                             {"eval_input_path": no_label}))
    ones = str(tmp_path / "ones.parquet")
    table = pq.read_table(data["test"])
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label",
                                    pa.array(np.ones(table.num_rows, np.int64))), ones)
    with pytest.raises(DataError) as err:
        check_inputs(pipeline_of(text, {"test_input_path": ones}))
    assert str(err.value) == (f"test_input_path: {ones}: column 'label' has 200 positive (> 0.5) of 200 rows; "
                              "expected both classes among the evaluation rows (eval_config.pointwise_metrics asks "
                              "for auc, which is undefined with one class)")
    # accuracy alone is defined on one class
    check_inputs(pipeline_of(bce_config_text(data, tmp_path / "m", pointwise="pointwise_metrics { accuracy {} }",
                                             best_metric="accuracy"), {"test_input_path": ones}))


# ---- training selects and stops on auc ------------------------------------------------------

def test_training_keeps_the_best_auc_checkpoint_and_stops_on_auc(data, tmp_path):
    from recframe.cli import evaluate, train
    import recframe.recipes.train as trainer

    model_dir = tmp_path / "model"
    config = tmp_path / "bce.config"
    config.write_text(bce_config_text(data, model_dir, num_epochs=8, batch_size=200, log_step_count_steps=10,
                                      extra_eval="early_stopping { metric: \"auc\" patience: 2 }"))
    write_curves, trainer.write_curves = trainer.write_curves, lambda *args, **kwargs: None  # not looked at
    try:
        assert train.main(["--pipeline_config", str(config)]) == 0
    finally:
        trainer.write_curves = write_curves
    records = [json.loads(line) for line in (model_dir / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert len(evals) >= 3 and all(0 <= r["auc"] <= 1 and 0 <= r["accuracy"] <= 1 for r in evals)
    assert all(r["num_queries"] == 200 for r in evals)
    # The kept checkpoint is the first evaluation of the highest validation auc.
    best = max(evals, key=lambda r: r["auc"])
    result = json.loads((model_dir / "eval_result.json").read_text())
    assert result["test"]["checkpoint_step"] == best["step"]
    assert 0 <= result["test"]["auc"] <= 1 and 0 <= result["test"]["accuracy"] <= 1
    # Early stopping on auc: it fired after 2 evaluations without a better auc (of 8 epochs of 10 steps).
    stops = [r for r in records if r["type"] == "early_stopping"]
    assert len(stops) == 1 and stops[0]["metric"] == "auc" and stops[0]["best"] == pytest.approx(best["auc"])
    assert evals[-3]["step"] == best["step"] and evals[-1]["step"] == stops[0]["step"] < 8 * 10
    assert max(r["auc"] for r in evals[-2:]) <= best["auc"]
    # The trained towers learned the label: better than chance on the held-out rows.
    assert best["auc"] > 0.6
    # recframe evaluate reproduces the test split's auc / accuracy from the same checkpoint.
    out = tmp_path / "test.json"
    assert evaluate.main(["--pipeline_config", str(model_dir / "pipeline.config"), "--eval_input_path",
                          data["test"], "--checkpoint_path", "best", "--output", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["auc"] == pytest.approx(result["test"]["auc"], abs=1e-9)
    assert got["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1e-9)


# ---- torchrun: the ranks' rows gathered ------------------------------------------------------

@pytest.mark.slow
def test_torchrun_evaluation_matches_single_process(data, tmp_path):
    from recframe.cli.evaluate import main as evaluate_main
    from recframe.recipes.train import train_and_evaluate

    config = tmp_path / "bce.config"
    config.write_text(bce_config_text(data, tmp_path / "model", num_epochs=1, batch_size=30, dropout=0.0))
    train_and_evaluate(Pipeline.from_file(str(config)), str(tmp_path / "model"))
    single = tmp_path / "single.json"
    assert evaluate_main(["--pipeline_config", str(config), "--output", str(single)]) == 0
    run = torchrun(["-m", "recframe.evaluate", "--pipeline_config", str(config), "--output",
                    str(tmp_path / "dist.json")], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = json.loads(single.read_text()), json.loads((tmp_path / "dist.json").read_text())
    assert a.keys() == b.keys() and {"auc", "accuracy"} <= set(a)
    for key in a:
        if isinstance(a[key], float):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
        else:
            assert a[key] == b[key]


# ---- validation -------------------------------------------------------------------------------

SOURCE = "p.config"


def problems(data, tmp_path, edit: dict | None = None, **options) -> list[str]:
    config = parse_pipeline_config(bce_config_text(data, tmp_path / "m", **options), SOURCE)
    if edit:
        from recframe.config import apply_edit_config_json
        apply_edit_config_json(config, edit)
    return validate_pipeline_config(config, SOURCE)


def test_validation_of_pointwise_metrics(data, tmp_path):
    assert problems(data, tmp_path) == []
    assert problems(data, tmp_path, extra_eval='early_stopping { metric: "accuracy" }') == []
    path = f"{SOURCE}: eval_config.pointwise_metrics"
    # Not a pointwise model.
    softmax = {"model_config.losses": [{"softmax_cross_entropy": {}}], "model_config.metrics": [],
               "data_config.label_fields": [], "model_config.dssm.in_batch_negative": True}
    assert problems(data, tmp_path, softmax) == [
        f"{path}: set, but model_config.losses has no binary_cross_entropy loss (softmax_cross_entropy does not make "
        "sigmoid(similarity / temperature) a probability of the label), expected a binary_cross_entropy loss (or "
        "no pointwise_metrics)"]
    # A sampled BCE has no label column to score.
    sampled = {"data_config.label_fields": [], "data_config.negative_sampler": {"input_path": data["items"],
                                                                                 "num_sample": 4}}
    assert problems(data, tmp_path, sampled) == [
        f"{path}: set with data_config.negative_sampler: the binary_cross_entropy learns from sampled negatives, not "
        "from a label column, and data_config.label_fields is refused with a sampler, so the evaluation rows have "
        "no label to score, expected no pointwise_metrics (or label_fields and no sampler)"]
    # Each metric once; an entry names a metric; thresholds in (0, 1).
    assert problems(data, tmp_path, pointwise=BOTH + " pointwise_metrics { auc {} }") == [
        f"{path}[2]: second auc (first at eval_config.pointwise_metrics[0]), expected each metric once (both would "
        "be reported as 'auc')"]
    assert problems(data, tmp_path, pointwise=BOTH + " pointwise_metrics {}") == [
        f"{path}[2]: no metric set, expected exactly one of auc or accuracy"]
    assert problems(data, tmp_path, pointwise="pointwise_metrics { auc {} } pointwise_metrics { accuracy "
                                              "{ threshold: 1.5 } }") == [
        f"{path}[1].accuracy.threshold: got 1.5, expected in (0, 1)"]
    # best_metric / early stopping on a pointwise metric that is not asked for.
    assert problems(data, tmp_path, pointwise="", best_metric="auc") == [
        f"{SOURCE}: eval_config.best_metric: 'auc' is a pointwise metric, reported only when "
        "eval_config.pointwise_metrics has auc {}, expected hit_rate@K, recall@K or ndcg@K with K in [10, 50] "
        "(eval_config.top_k), or mrr; each also prefixed raw_ (or pointwise_metrics { auc {} })"]
    assert problems(data, tmp_path, pointwise="pointwise_metrics { auc {} }",
                    extra_eval='early_stopping { metric: "accuracy" }') == [
        f"{SOURCE}: eval_config.early_stopping.metric: 'accuracy' is a pointwise metric, reported only when "
        "eval_config.pointwise_metrics has accuracy {}, expected hit_rate@K, recall@K or ndcg@K with K in [10, 50] "
        "(eval_config.top_k), or mrr; each also prefixed raw_; or auc (eval_config.pointwise_metrics) (or "
        "pointwise_metrics { accuracy {} })"]
    assert problems(data, tmp_path, best_metric="aucc") == [
        f"{SOURCE}: eval_config.best_metric: unknown metric 'aucc' (did you mean 'auc'?), expected hit_rate@K, "
        "recall@K or ndcg@K with K in [10, 50] (eval_config.top_k), or mrr; each also prefixed raw_; or auc or "
        "accuracy (eval_config.pointwise_metrics)"]


def test_validation_without_label_fields(tmp_path):
    """A BCE model always has label_fields (or a sampler); the rule still names the field when
    the loss check is what failed."""
    paths = {n: f"{n}.parquet" for n in ("train", "valid", "test", "items")}
    config = parse_pipeline_config(bce_config_text(paths, tmp_path / "m"), SOURCE)
    del config.data_config.label_fields[:]
    got = validate_pipeline_config(config, SOURCE)
    assert f"{SOURCE}: eval_config.pointwise_metrics: set without data_config.label_fields, expected the label " \
           "column that binary_cross_entropy reads (and the evaluation rows carry) in data_config.label_fields" in got


# ---- the shipped ML-1M config ----------------------------------------------------------------

def test_lightning_dssm_ml1m_config_validates(capsys):
    from recframe.cli.validate import main as validate_main

    path = str(REPO / "examples" / "lightning_dssm_movielens_1m.config")
    assert validate_main(["--pipeline_config", path, "--require", "train,eval,item,test,model_dir"]) == 0
    assert capsys.readouterr().out.strip() == f"OK: {path}"
    config = parse_pipeline_config(Path(path).read_text(), path)
    assert config.data_config.movielens.variant == "ml-1m"
    assert config.eval_config.best_metric == "auc"
    assert {"auc", "accuracy"} <= set(eval_metric_names(config.eval_config))
