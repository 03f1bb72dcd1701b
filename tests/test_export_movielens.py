"""Export parity on the MovieLens-100K quick start: train 1 epoch, evaluate the test split,
export, predict the test users and the items, and recompute HitRate@50 from the exported
embeddings with the same exclusion as recframe.evaluate: it must equal evaluate's exactly.

Needs ``$RECFRAME_DATA_DIR/ml-100k`` (MovieLens is not redistributed); skipped otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import quickstart_data_edit
from recframe.cli import evaluate, export, predict, train
from recframe.features import BatchParser, item_keys
from recframe.metrics.item_index import ItemIndex
from recframe.metrics.retrieval import RetrievalMetrics, exact_top_k, remove_targets_from_exclusion
from recframe.pipeline import Pipeline
from recframe.training.checkpoint import load_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dssm_movielens.config"

pytestmark = pytest.mark.slow


def _embeddings(path: Path, id_column: str) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    assert table.column_names == [id_column, "embedding"]
    return table.column(id_column).to_numpy(), np.array(table.column("embedding").to_pylist(), dtype=np.float32)


def test_export_reproduces_evaluate_hit_rate(raw_dir, tmp_path):
    data, model_dir, export_dir = tmp_path / "data", tmp_path / "model", tmp_path / "export"
    edit = json.dumps({"train_config.num_epochs": 1, **quickstart_data_edit(data),
                       "data_config.movielens.raw_dir": str(raw_dir), "model_dir": str(model_dir)})
    config = str(EXAMPLE)
    assert train.main(["--pipeline_config", config, "--edit_config_json", edit]) == 0
    result_path = tmp_path / "eval_test.json"
    assert evaluate.main(["--pipeline_config", config, "--edit_config_json", edit, "--device", "cpu",
                          "--eval_input_path", str(data / "test.parquet"), "--output", str(result_path)]) == 0
    expected = json.loads(result_path.read_text())
    assert export.main(["--pipeline_config", config, "--edit_config_json", edit,
                        "--export_dir", str(export_dir)]) == 0
    # Each tower ships an AOTInductor package, which the CPU serves by (predict below included).
    from recframe.serving import load_tower

    for side in ("user", "item"):
        meta = json.loads((export_dir / side / "tower.json").read_text())
        assert meta["artifacts"] == {"torch_export": "tower.pt2", "aoti_cpu": "tower.cpu.pt2"}
        assert load_tower(export_dir / side).runtime == "aoti"
        assert load_tower(export_dir / side, device="cpu").runtime == "aoti"

    # Per-row parity with the in-training embeddings on real rows.
    pipeline = Pipeline.from_file(config, edit)
    model = pipeline.build_model()
    model.load_state_dict(load_checkpoint(model_dir / "checkpoints" / "best.pt")["model"])
    model.eval()
    test = pq.read_table(data / "test.parquet")
    items = pq.read_table(data / "items.parquet")
    item_out, user_out = tmp_path / "item_emb.parquet", tmp_path / "user_emb.parquet"
    batch = str(pipeline.data_config.batch_size)  # the batch size evaluate embeds with
    assert predict.main(["--export_dir", str(export_dir / "item"), "--input", str(data / "items.parquet"),
                         "--output", str(item_out), "--batch_size", batch, "--no_progress"]) == 0
    assert predict.main(["--export_dir", str(export_dir / "user"), "--input", str(data / "test.parquet"),
                         "--output", str(user_out), "--id_column", "user_id", "--batch_size", batch,
                         "--no_progress"]) == 0
    item_ids, item_emb = _embeddings(item_out, "movie_id")
    user_ids, user_emb = _embeddings(user_out, "user_id")
    assert item_ids.tolist() == items.column("movie_id").to_pylist()
    assert user_ids.tolist() == test.column("user_id").to_pylist()
    with torch.no_grad():
        ref_items = model.item_embedding(BatchParser(pipeline.item_features)(items)).numpy()
        ref_users = model.user_embedding(BatchParser(pipeline.user_features)(test)).numpy()
    assert np.abs(item_emb - ref_items).max() <= 1e-5
    assert np.abs(user_emb - ref_users).max() <= 1e-5

    # HitRate@50 from the exported embeddings, with evaluate's exclusion (the user's seen items).
    eval_config = pipeline.config.eval_config
    index = ItemIndex(item_keys(items.column("movie_id")))
    targets = torch.from_numpy(index.lookup_targets(item_keys(test.column("movie_id"))))
    seen = test.column("seen_items").combine_chunks()
    offsets = seen.offsets.to_numpy().astype(np.int64)
    rows, offsets = index.lookup_exclude(item_keys(seen.values), offsets - offsets[0])
    exclude = remove_targets_from_exclusion((torch.from_numpy(rows), torch.from_numpy(offsets)),
                                            (targets, torch.arange(len(targets) + 1)), len(targets))
    metrics = RetrievalMetrics([50])
    _, top = exact_top_k(torch.from_numpy(user_emb), torch.from_numpy(item_emb), 50, exclude,
                         eval_config.user_chunk_size)
    metrics.update(top, targets)
    recomputed = metrics.compute()
    assert metrics.count == expected["num_queries"] == 943
    assert recomputed["hit_rate@50"] == expected["hit_rate@50"]
    assert expected["hit_rate@50"] > 0.1  # a trained model (chance ~0.03)
