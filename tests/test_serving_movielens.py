"""recframe serve on the quick start (issue 17): for the 943 MovieLens-100K test users, the
server's top-10 equals recframe retrieve's exact top-10 over the same export (the user's seen
items excluded, as the evaluation does). Needs $RECFRAME_DATA_DIR/ml-100k; skipped otherwise."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import quickstart_data_edit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dssm_movielens.config"

pytestmark = pytest.mark.slow


def test_served_top_k_equals_retrieve_for_every_test_user(raw_dir, tmp_path):
    from recframe.cli import export, predict, retrieve, train
    from recframe.serving import load_tower
    from recframe.serving.client import RetrievalClient
    from recframe.serving.server import ServeOptions, Server

    data, model_dir, export_dir = tmp_path / "data", tmp_path / "model", tmp_path / "export"
    edit = json.dumps({"train_config.num_epochs": 1, **quickstart_data_edit(data),
                       "data_config.movielens.raw_dir": str(raw_dir), "model_dir": str(model_dir)})
    assert train.main(["--pipeline_config", str(EXAMPLE), "--edit_config_json", edit]) == 0
    assert export.main(["--pipeline_config", str(EXAMPLE), "--edit_config_json", edit, "--export_dir",
                        str(export_dir)]) == 0
    for side, table, extra in (("item", "items", []), ("user", "test", ["--id_column", "user_id"])):
        assert predict.main(["--export_dir", str(export_dir / side), "--input", str(data / f"{table}.parquet"),
                             "--output", str(tmp_path / f"{side}.parquet"), "--no_progress", *extra]) == 0
    assert retrieve.main(["--item_embeddings", str(tmp_path / "item.parquet"), "--user_embeddings",
                          str(tmp_path / "user.parquet"), "--export_dir", str(export_dir / "user"), "--top_k", "10",
                          "--ground_truth", str(data / "test.parquet"), "--target_column", "movie_id",
                          "--exclude_column", "seen_items", "--output", str(tmp_path / "top.parquet")]) == 0
    offline = pq.read_table(tmp_path / "top.parquet").to_pylist()
    offline = {row["user_id"]: row for row in offline}

    test = pq.read_table(data / "test.parquet")
    columns = load_tower(export_dir / "user").input_columns
    users = test.select([*columns, "movie_id", "seen_items"]).to_pylist()
    server = Server(ServeOptions(str(export_dir), items=str(data / "items.parquet"), port=0)).start()
    served: dict[int, list] = {}
    try:
        def ask(part):
            with RetrievalClient(f"127.0.0.1:{server.port}") as client:
                for row in part:
                    exclude = sorted(set(row["seen_items"]) - {row["movie_id"]})  # the evaluation keeps the target
                    served[row["user_id"]] = client.top_k({c: row[c] for c in columns}, k=10, exclude=exclude)
        threads = [threading.Thread(target=ask, args=(users[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.stop()
    assert len(served) == 943
    for user_id, answer in served.items():
        assert [i for i, _ in answer] == offline[user_id]["item_ids"], user_id
        np.testing.assert_allclose([s for _, s in answer], offline[user_id]["scores"], rtol=0, atol=1e-5)
