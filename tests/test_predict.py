"""``recframe predict`` reads its input with num_workers workers and keeps the input's row order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import recframe.recipes.predict as predict_recipe


class FakeTower:
    """Stands for an exported item tower: embedding = (item_id, 2 * x); its pipeline.config
    sets data_config.num_workers."""

    side, id_column, input_columns = "item", "item_id", ["item_id", "x"]

    def __init__(self, path, num_workers: int) -> None:
        self.path = path
        self.meta = {"pipeline_config": "pipeline.config"}
        (path / "pipeline.config").write_text(f"data_config {{ batch_size: 8 num_workers: {num_workers} }}\n")

    def embed(self, table: pa.Table, source: str = "") -> np.ndarray:
        ids = table.column("item_id").to_numpy().astype(np.float32)
        return np.stack([ids, 2 * table.column("x").to_numpy().astype(np.float32)], axis=1)


@pytest.fixture
def items(tmp_path):
    """Two Parquet files of 23 and 18 rows (row groups of 5): batches straddle row groups and files."""
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000)[:41].astype(np.int64)
    for name, part in (("a.parquet", slice(0, 23)), ("b.parquet", slice(23, 41))):
        table = pa.table({"item_id": ids[part], "x": rng.normal(size=len(ids[part])).astype(np.float32)})
        pq.write_table(table, tmp_path / name, row_group_size=5)
    return f"{tmp_path / 'a.parquet'},{tmp_path / 'b.parquet'}", ids


@pytest.fixture
def export_dir(tmp_path, monkeypatch):
    """An export directory whose pipeline.config sets num_workers 2; load_tower gives the fake."""
    path = tmp_path / "export_item"
    path.mkdir()
    tower = FakeTower(path, num_workers=2)
    monkeypatch.setattr(predict_recipe, "load_tower", lambda export_dir, device=None: tower)
    return str(path)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # 3 workers on a 2-core machine
def test_num_workers_keep_the_input_order(items, export_dir, tmp_path, monkeypatch):
    input_path, ids = items
    used = []
    create_dataloader = predict_recipe.create_dataloader
    monkeypatch.setattr(predict_recipe, "create_dataloader",
                        lambda dataset, num_workers: used.append(num_workers) or create_dataloader(dataset, num_workers))
    tables = {}
    for workers in (0, 2, 3, None):  # 7 batches, the last short; None: data_config.num_workers of the export's pipeline.config (2)
        out = tmp_path / f"emb_{workers}.parquet"
        assert predict_recipe.predict(export_dir, input_path, str(out), batch_size=6, progress=False,
                                      num_workers=workers) == len(ids)
        tables[workers] = pq.read_table(out)
    assert used == [0, 2, 3, 2]
    assert tables[0].column("item_id").to_numpy().tolist() == ids.tolist()
    for workers in (2, 3, None):
        assert tables[workers].equals(tables[0]), workers
