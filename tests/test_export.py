"""Exported towers (recframe.export), serving (recframe.serving) and recframe.predict.

Parity: the embeddings of the exported towers, fed raw rows, equal the model's
user_embedding / item_embedding of the same rows (<= 1e-5), for DSSM and DSSMV2, over
identity / hashed / vocab ids, a bucketized and a normalized raw feature, a sequence
feature, cosine normalisation and variational dropout, at batch sizes other than the export's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import synthetic
from recframe.cli import export, predict
from recframe.recipes import export as export_lib
from recframe.features import BatchParser, FeatureInputError
from recframe.pipeline import Pipeline
from recframe.serving import load_tower

STEP = 123


def _write_model(tmp: Path, variant: str) -> tuple[str, dict, Pipeline, torch.nn.Module]:
    """A synthetic config (with a vocab_file feature) and a checkpoint of a random model."""
    config_path, paths = synthetic.write_config(tmp, model_dir=tmp / "model")
    text = Path(config_path).read_text()
    (tmp / "segments.txt").write_text("".join(f"{i}\n" for i in range(9)))  # "9" is out of vocabulary
    text = text.replace('feature_name: "segment" num_buckets: 10', 'feature_name: "segment" vocab_file: "segments.txt"')
    # A multi-valued id feature (a bag of the history, hashed, mean-pooled): its id counts
    # differ from the other features' of the tower.
    text = text.replace("model_config {", 'feature_configs { id_feature { feature_name: "hist_bag" input_name: '
                        '"hist_item_ids" hash_bucket_size: 64 embedding_dim: 8 pooling: MEAN } }\nmodel_config {')
    text = text.replace('"age", "hist_item_ids"]', '"age", "hist_item_ids", "hist_bag"]')
    if variant.startswith("DSSMV2"):
        options = " embedding_wise: true" if variant.endswith("embedding_wise") else ""
        text = text.replace("  dssm {",
                            f"  variational_dropout {{ initial_drop_probability: 0.3{options} }}\n  dssm_v2 {{")
        text = text.replace("similarity: COSINE", "similarity: INNER_PRODUCT")
    Path(config_path).write_text(text)
    pipeline = Pipeline.from_file(config_path)
    torch.manual_seed(0)
    model = pipeline.build_model()
    with torch.no_grad():  # non-trivial values everywhere (e.g. the dropout logits)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ckpt_dir = tmp / "model" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": STEP}, ckpt_dir / "best.pt")
    return config_path, paths, pipeline, model.eval()


@pytest.fixture(scope="module", params=["DSSM", "DSSMV2"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    config_path, paths, pipeline, model = _write_model(tmp, request.param)
    export_dir = tmp / "export"
    assert export.main(["--pipeline_config", config_path, "--export_dir", str(export_dir), "--no_compile"]) == 0
    return dict(variant=request.param, config=config_path, paths=paths, pipeline=pipeline, model=model,
                export_dir=export_dir, tmp=tmp)


@torch.no_grad()
def _reference(exported, side: str, table: pa.Table) -> np.ndarray:
    pipeline, model = exported["pipeline"], exported["model"]
    if side == "user":
        return model.user_embedding(BatchParser(pipeline.user_features)(table)).numpy()
    return model.item_embedding(BatchParser(pipeline.item_features)(table)).numpy()


def test_layout_and_sidecar(exported):
    export_dir = exported["export_dir"]
    assert sorted(os.listdir(export_dir)) == ["item", "user"]
    assert not [p for p in os.listdir(export_dir.parent) if ".tmp-" in p]
    for side in ("user", "item"):
        assert sorted(os.listdir(export_dir / side)) == ["pipeline.config", "tower.json", "tower.pt2"]
        meta = json.loads((export_dir / side / "tower.json").read_text())
        assert meta["side"] == side and meta["format_version"] == 2
        assert meta["output_dim"] == 16
        assert meta["temperature"] == pytest.approx(0.1)
        assert meta["checkpoint"]["step"] == STEP
        cosine = exported["variant"] == "DSSM"
        assert meta["similarity"] == ("COSINE" if cosine else "INNER_PRODUCT")
        assert meta["normalized"] is cosine
        # Self-contained: the vocabulary is inlined, no file reference is left.
        config_text = (export_dir / side / "pipeline.config").read_text()
        assert "vocab_file" not in config_text and 'vocab_list: "8"' in config_text
    user = json.loads((export_dir / "user" / "tower.json").read_text())
    item = json.loads((export_dir / "item" / "tower.json").read_text())
    assert user["input_columns"] == ["user_id", "segment", "age", "hist_item_ids"]
    assert item["input_columns"] == ["item_id", "category", "price"]
    assert item["id_column"] == "item_id"
    assert [t["name"] for t in user["tensor_inputs"]] == [
        "user_id.values", "user_id.lengths", "segment.values", "segment.lengths", "age.values", "age.lengths",
        "hist_item_ids.ids", "hist_item_ids.lengths", "hist_bag.values", "hist_bag.lengths"]
    transforms = {f["feature_name"]: f["transform"] for f in user["features"] + item["features"]}
    assert transforms["segment"]["mapping"] == "vocab" and transforms["segment"]["vocab_size"] == 9
    assert transforms["category"] == {"type": "IdFeature", "mapping": "hash", "hash": "fnv1a64",
                                      "hash_bucket_size": 32, "pooling": "sum"}
    assert transforms["age"]["boundaries"] == [25.0, 35.0, 50.0]
    assert transforms["hist_item_ids"]["sequence_length"] == 20


def test_parity_with_model(exported):
    """Real rows, other batch sizes than the export's example (3): equal to the model's."""
    export_dir = exported["export_dir"]
    valid = pq.read_table(exported["paths"]["valid"])
    items = pq.read_table(exported["paths"]["items"])
    user = load_tower(export_dir / "user")
    item = load_tower(export_dir / "item")
    user_emb = user.embed(valid, batch_size=37)
    item_emb = item.embed(items.to_pandas())  # one batch of 200, from pandas
    assert user_emb.dtype == np.float32 and user_emb.shape == (200, 16) and item_emb.shape == (200, 16)
    np.testing.assert_allclose(user_emb, _reference(exported, "user", valid), atol=1e-5, rtol=0)
    np.testing.assert_allclose(item_emb, _reference(exported, "item", items), atol=1e-5, rtol=0)
    if exported["variant"] == "DSSM":
        np.testing.assert_allclose(np.linalg.norm(user_emb, axis=1), 1.0, atol=1e-5)
    # Segments 9 (out of vocabulary) and 0-8 all occur.
    assert set(valid.column("segment").to_pylist()) == set(range(10))


def test_embedding_wise_variational_dropout_exports(tmp_path):
    """An exported tower of a model with embedding-wise variational dropout multiplies each
    dimension by its expected keep probability, as the model does at evaluation."""
    config_path, paths, pipeline, model = _write_model(tmp_path, "DSSMV2_embedding_wise")
    assert model.user_tower.dropouts["user"].drop_logit.shape == (16 + 8 + 4 + 16 + 8,)
    export_dir = tmp_path / "export"
    assert export.main(["--pipeline_config", config_path, "--export_dir", str(export_dir), "--no_compile"]) == 0
    exported = dict(pipeline=pipeline, model=model)
    valid, items = pq.read_table(paths["valid"]), pq.read_table(paths["items"])
    np.testing.assert_allclose(load_tower(export_dir / "user").embed(valid, batch_size=37),
                               _reference(exported, "user", valid), atol=1e-5, rtol=0)
    np.testing.assert_allclose(load_tower(export_dir / "item").embed(items), _reference(exported, "item", items),
                               atol=1e-5, rtol=0)


def test_single_rows_dicts_and_empty_history(exported):
    user = load_tower(exported["export_dir"] / "user")
    rows = {"user_id": [5], "segment": [9], "age": [40], "hist_item_ids": [[]]}
    table = pa.table({"user_id": pa.array([5], pa.int64()), "segment": pa.array([9], pa.int64()),
                      "age": pa.array([40], pa.int64()), "hist_item_ids": pa.array([[]], pa.list_(pa.int64())),
                      "item_id": pa.array([0], pa.int64())})
    np.testing.assert_allclose(user.embed(rows), _reference(exported, "user", table), atol=1e-5, rtol=0)
    long_history = list(range(50))  # longer than sequence_length (20): the last 20 are kept
    rows = {"user_id": [5, 6], "segment": [1, 2], "age": [20, 60], "hist_item_ids": [long_history, [3]]}
    table = pa.table({**{k: pa.array(v) for k, v in rows.items()}, "item_id": pa.array([0, 0])})
    np.testing.assert_allclose(user.embed(rows), _reference(exported, "user", table), atol=1e-5, rtol=0)
    assert user.embed({k: [] for k in rows}).shape == (0, 16)


@pytest.mark.slow
def test_fresh_process(exported):
    """The export loads and runs in a new interpreter (only the package imported)."""
    export_dir = exported["export_dir"]
    code = (
        "import json, sys\n"
        "from recframe.serving import load_tower\n"
        "item = load_tower(sys.argv[1])\n"
        "rows = {'item_id': [0, 7, 199], 'category': ['c0', 'c7', 'zz'], 'price': [1.5, 99.0, 50.0]}\n"
        "print(json.dumps(item.embed(rows).tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(export_dir / "item")], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    got = np.array(json.loads(out.stdout), dtype=np.float32)
    table = pa.table({"item_id": pa.array([0, 7, 199]), "category": ["c0", "c7", "zz"], "price": [1.5, 99.0, 50.0]})
    np.testing.assert_allclose(got, _reference(exported, "item", table), atol=1e-5, rtol=0)


def test_bad_rows_name_the_column(exported):
    user = load_tower(exported["export_dir"] / "user")
    item = load_tower(exported["export_dir"] / "item")
    good = {"user_id": [1], "segment": [1], "age": [30], "hist_item_ids": [[1, 2]]}
    with pytest.raises(FeatureInputError, match="missing column 'hist_item_ids'"):
        user.embed({k: v for k, v in good.items() if k != "hist_item_ids"})
    with pytest.raises(FeatureInputError, match="column 'hist_item_ids'.*expected a list of ids"):
        user.embed({**good, "hist_item_ids": [7]})
    with pytest.raises(FeatureInputError, match="column 'age'.*expected numbers"):
        user.embed({**good, "age": ["old"]})
    with pytest.raises(FeatureInputError, match="column 'user_id'.*outside"):
        user.embed({**good, "user_id": [10_000]})
    with pytest.raises(FeatureInputError, match="column 'item_id'.*expected ids"):
        item.embed({"item_id": [1.5], "category": ["c1"], "price": [3.0]})
    with pytest.raises(FeatureInputError, match="different numbers of rows"):
        item.embed({"item_id": [1, 2], "category": ["c1"], "price": [3.0]})
    with pytest.raises(TypeError, match="dict of lists"):
        item.embed([1, 2, 3])


def test_existing_export_dir_and_overwrite(exported, tmp_path, capsys):
    config = exported["config"]
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    assert export.main(["--pipeline_config", config, "--export_dir", str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(os.listdir(target)) == ["keep.txt"]
    assert export.main(["--pipeline_config", config, "--export_dir", str(target), "--overwrite", "--no_compile",
                        "--checkpoint_path", str(exported["tmp"] / "model" / "checkpoints" / "best.pt")]) == 0
    assert sorted(os.listdir(target)) == ["item", "user"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary left behind


def test_failed_export_leaves_nothing(exported, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(export_lib, "export_program", fail)
    with pytest.raises(RuntimeError, match="boom"):
        export_lib.export_towers(exported["pipeline"], exported["model"], tmp_path / "out", compile_cpu=False)
    assert os.listdir(tmp_path) == []


def test_missing_checkpoint_is_a_clear_error(exported, tmp_path, capsys):
    assert export.main(["--pipeline_config", exported["config"], "--export_dir", str(tmp_path / "x"),
                        "--checkpoint_path", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_predict_output(exported, tmp_path):
    export_dir = exported["export_dir"]
    items_path = exported["paths"]["items"]
    out = tmp_path / "emb" / "item_emb.parquet"
    assert predict.main(["--export_dir", str(export_dir / "item"), "--input", items_path, "--output", str(out),
                         "--batch_size", "64", "--no_progress"]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["item_id", "embedding"]
    assert table.schema.field("item_id").type == pa.int64()
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    items = pq.read_table(items_path)
    assert table.column("item_id").to_pylist() == items.column("item_id").to_pylist()
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(emb, _reference(exported, "item", items), atol=1e-5, rtol=0)
    assert [p for p in os.listdir(out.parent)] == ["item_emb.parquet"]

    # The user tower: id column chosen, rows in input order.
    users = tmp_path / "user_emb.parquet"
    assert predict.main(["--export_dir", str(export_dir / "user"), "--input", exported["paths"]["valid"],
                         "--output", str(users), "--id_column", "user_id", "--no_progress"]) == 0
    table = pq.read_table(users)
    valid = pq.read_table(exported["paths"]["valid"])
    assert table.column_names == ["user_id", "embedding"]
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist(), np.float32),
                               _reference(exported, "user", valid), atol=1e-5, rtol=0)


def test_predict_errors(exported, tmp_path, capsys):
    export_dir = exported["export_dir"]
    out = tmp_path / "u.parquet"
    # The user tower over the item table: its columns are missing.
    assert predict.main(["--export_dir", str(export_dir / "user"), "--input", exported["paths"]["items"],
                         "--output", str(out), "--no_progress"]) == 2
    assert "user_id" in capsys.readouterr().err
    assert predict.main(["--export_dir", str(export_dir), "--input", exported["paths"]["items"],
                         "--output", str(out), "--no_progress"]) == 2
    assert "tower.json" in capsys.readouterr().err
    assert not out.exists() and os.listdir(tmp_path) == []
