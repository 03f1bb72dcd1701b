"""``recframe.evaluate.main`` on a model_dir trained by ``recframe.train.main`` (synthetic data)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recframe.cli import evaluate, train
from recframe.recipes.evaluate import target_ranks

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared machine, torch's threads competing with other
    processes make these short runs several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data paths, model_dir) of a finished 1-epoch run (20 steps, evaluations at 10 and 20)."""
    import recframe.recipes.train as trainer

    tmp = tmp_path_factory.mktemp("evaluate_cli")
    paths = synthetic.write_dataset(tmp / "data")
    model_dir = tmp / "model"
    config = tmp / "pipeline.config"
    config.write_text(synthetic.pipeline_config_text(paths, model_dir, num_epochs=1, eval_every_n_steps=10,
                                                     log_step_count_steps=10))
    write_curves, trainer.write_curves = trainer.write_curves, lambda *args, **kwargs: None  # not looked at
    try:
        assert train.main(["--pipeline_config", str(config)]) == 0
    finally:
        trainer.write_curves = write_curves
    return paths, model_dir


def saved_config(model_dir) -> str:
    return str(model_dir / "pipeline.config")


def test_reproduces_the_trainers_test_metrics(trained, tmp_path):
    paths, model_dir = trained
    result = json.loads((model_dir / "eval_result.json").read_text())
    out = tmp_path / "test_metrics.json"
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--eval_input_path", paths["test"],
                          "--checkpoint_path", "best", "--output", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["step"] == result["test"]["checkpoint_step"]
    assert got["checkpoint"].endswith("best.pt") and got["eval_input_path"] == paths["test"]
    expected = {k: v for k, v in result["test"].items() if k != "checkpoint_step"}
    assert {k: got[k] for k in expected} == expected
    assert got["num_queries"] == synthetic.NUM_USERS and got["hit_rate@10"] > 0.3


def test_per_query_output_holds_each_targets_rank_and_reproduces_the_metrics(trained, tmp_path):
    paths, model_dir = trained
    out, ranks_path = tmp_path / "m.json", tmp_path / "new_dir" / "ranks.parquet"  # its folder is made
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--eval_input_path", paths["test"],
                          "--output", str(out), "--per_query_output", str(ranks_path)]) == 0
    got = json.loads(out.read_text())
    table = pq.read_table(ranks_path)
    assert table.column_names == ["row", "item_key", "rank"]
    ranks = table.column("rank").to_numpy()
    # rows in the order of the evaluation data, each with its own target
    test_items = pq.read_table(paths["test"]).column("item_id").to_numpy()
    assert table.column("row").to_pylist() == list(range(len(test_items)))
    assert (table.column("item_key").to_numpy() == test_items).all()
    assert ranks.min() >= 0 and ranks.max() <= 50  # top_k [10, 50]
    for k in (10, 50):
        assert ((ranks >= 1) & (ranks <= k)).mean() == pytest.approx(got[f"hit_rate@{k}"], abs=1e-12)
    assert np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0).mean() == pytest.approx(got["mrr"], abs=1e-12)
    assert len(np.unique(ranks)) > 3  # varied ranks: the checks above can tell a wrong one


def test_target_ranks():
    top = torch.tensor([[4, 2, 7], [1, 3, 5], [9, 8, 6]])
    assert target_ranks(top, torch.tensor([7, 1, 0])).tolist() == [3, 1, 0]


def test_latest_on_the_eval_data_reproduces_the_last_evaluation(trained, capsys):
    paths, model_dir = trained
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--checkpoint_path", "latest"]) == 0
    out = capsys.readouterr().out
    assert "hit_rate" in out and "eval_result_valid.json" in out
    got = json.loads((model_dir / "eval_result_valid.json").read_text())  # default output name
    last_eval = json.loads((model_dir / "eval_result.json").read_text())["eval"]
    assert got["step"] == 20
    assert {k: got[k] for k in last_eval} == last_eval


def test_explicit_checkpoint_file(trained, tmp_path):
    paths, model_dir = trained
    ckpt = model_dir / "checkpoints" / "ckpt-00000010.pt"
    out = tmp_path / "m.json"
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--checkpoint_path", str(ckpt),
                          "--output", str(out)]) == 0
    got = json.loads(out.read_text())
    log = [json.loads(line) for line in (model_dir / "log.jsonl").read_text().splitlines()]
    (eval_at_10,) = [r for r in log if r["type"] == "eval" and r["step"] == 10]
    assert got["step"] == 10 and got["mrr"] == eval_at_10["mrr"]


def test_missing_checkpoint_file_exits_2(trained, tmp_path, capsys):
    paths, model_dir = trained
    missing = str(tmp_path / "nope.pt")
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--checkpoint_path", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and missing in err and "does not exist" in err
    assert err.count("\n") == 1


def test_model_dir_without_checkpoints_exits_2_and_creates_nothing(trained, tmp_path, capsys):
    paths, model_dir = trained
    empty = tmp_path / "no_run_here"
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--model_dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "checkpoints" in err
    assert not empty.exists()


def test_missing_eval_input_exits_2(trained, tmp_path, capsys):
    paths, model_dir = trained
    missing = str(tmp_path / "nope.parquet")
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--eval_input_path", missing]) == 2
    err = capsys.readouterr().err
    assert "eval_input_path" in err and missing in err and "Traceback" not in err


def test_config_error_exits_2(trained, capsys):
    paths, model_dir = trained
    edit = '{"eval_config.top_k": [0]}'
    assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--edit_config_json", edit]) == 2
    err = capsys.readouterr().err
    assert "eval_config.top_k" in err


def test_item_chunks_and_approximate_search(trained, tmp_path):
    """Scoring the catalogue 7 items at a time gives the same metrics; an HNSW index gives
    metrics close to them and reports its own recall against the exact search."""
    pytest.importorskip("faiss", reason="faiss is the optional extra recframe[faiss]")
    paths, model_dir = trained
    runs = {}
    for name, edit in (("exact", {}), ("chunked", {"eval_config.item_chunk_size": 7, "eval_config.user_chunk_size": 3}),
                       ("hnsw", {"eval_config.approximate": {"index": "hnsw", "recall_sample_users": 50}})):
        out = tmp_path / f"{name}.json"
        assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--eval_input_path", paths["test"],
                              "--edit_config_json", json.dumps(edit), "--output", str(out)]) == 0
        runs[name] = json.loads(out.read_text())
    metric_keys = [k for k in runs["exact"] if "@" in k or k.endswith("mrr")]
    for key in metric_keys:
        assert runs["chunked"][key] == pytest.approx(runs["exact"][key], abs=1e-12), key
    assert "index_recall@10" not in runs["exact"]
    # 200 items: HNSW finds (nearly) the exact neighbours
    assert runs["hnsw"]["index_recall@10"] >= 0.95 and runs["hnsw"]["index_recall@50"] >= 0.95
    assert runs["hnsw"]["hit_rate@10"] == pytest.approx(runs["exact"]["hit_rate@10"], abs=0.03)


def test_num_workers_parse_the_evaluation_in_the_order_of_num_workers_0(trained, tmp_path):
    """data_config.num_workers parses the evaluation rows and the catalogue in workers; the
    metrics and each query's rank are those of num_workers 0 (batches of 7: many, the last short)."""
    from recframe.pipeline import Pipeline

    paths, model_dir = trained
    runs = {}
    for workers in (0, 2):
        edit = json.dumps({"data_config.num_workers": workers, "data_config.batch_size": 7})
        out, ranks = tmp_path / f"m{workers}.json", tmp_path / f"ranks{workers}.parquet"
        assert evaluate.main(["--pipeline_config", saved_config(model_dir), "--eval_input_path", paths["test"],
                              "--edit_config_json", edit, "--output", str(out), "--per_query_output",
                              str(ranks)]) == 0
        runs[workers] = json.loads(out.read_text()), pq.read_table(ranks)
    metrics = [k for k in runs[0][0] if "@" in k or k in ("mrr", "num_queries", "step")]
    assert {k: runs[2][0][k] for k in metrics} == {k: runs[0][0][k] for k in metrics}
    assert runs[2][1].equals(runs[0][1])
    # The workers do the parsing: the loader runs data_config.num_workers of them.
    pipeline = Pipeline.from_file(saved_config(model_dir), json.dumps({"data_config.num_workers": 2,
                                                                       "data_config.batch_size": 7}))
    loader = pipeline.eval_loader(paths["test"], pipeline.eval_user_parser())
    assert loader.num_workers == 2
    test_items = pq.read_table(paths["test"]).column("item_id").to_numpy()
    assert np.concatenate([batch.item_key.numpy() for batch in loader]).tolist() == test_items.tolist()
