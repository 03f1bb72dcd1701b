"""Every shipped config (examples/**, experiments/**) trains on a small sample and exports.

Each config runs as a user would run it — ``recframe.train``, then ``recframe.export`` —
from a working directory that holds its data under the config's own relative paths, with
only these overrides: 30 training steps, a loss logged every 5 steps, and a temporary
model_dir. Asserted per config:

- training lowers the loss (the last 5-step window's mean is below the first one's);
- the test split was scored and its metrics are probabilities;
- the exported user and item towers, fed raw rows of the validation and item tables, give
  the embeddings of the trained model loaded from the exported checkpoint (<= 1e-5).

Data: MovieLens-100K from ``$RECFRAME_DATA_DIR`` (skipped without it; MovieLens is never
shipped), the query/document tables made from it by ``examples/query_document/make_pairs.py``,
and, for the ML-1M config, a synthetic ML-1M in the GroupLens file format made here (the
real ML-1M ratings are not available to the test suite).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recframe.cli import export, train
from recframe.features import BatchParser
from recframe.pipeline import Pipeline
from recframe.serving import load_tower
from recframe.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for d in ("examples", "experiments") for p in (ROOT / d).rglob("*.config"))
STEPS, LOG_EVERY = 30, 5

pytestmark = pytest.mark.slow


def write_synthetic_ml1m(raw: Path, num_users: int = 300, num_movies: int = 400, per_user: int = 50) -> None:
    """ratings.dat / movies.dat / users.dat in the ML-1M format, random but fixed (seed 0)."""
    rng = np.random.default_rng(0)
    raw.mkdir(parents=True, exist_ok=True)
    genres = ["Action", "Comedy", "Drama", "Romance", "Thriller"]
    (raw / "movies.dat").write_bytes("".join(
        f"{m}::Movie {m} ({1950 + m % 50})::{'|'.join(rng.choice(genres, 2, replace=False))}\n"
        for m in range(1, num_movies + 1)).encode("latin-1"))
    (raw / "users.dat").write_text("".join(
        f"{u}::{'MF'[u % 2]}::{[1, 18, 25, 35, 45, 50, 56][u % 7]}::{u % 21}::{10000 + 37 * u}\n"
        for u in range(1, num_users + 1)))
    lines = []
    for u in range(1, num_users + 1):
        movies = rng.choice(np.arange(1, num_movies + 1), per_user, replace=False)
        for k, m in enumerate(movies):
            lines.append(f"{u}::{m}::{int(rng.integers(1, 6))}::{978300000 + 1000 * u + 60 * k}\n")
    (raw / "ratings.dat").write_text("".join(lines))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory with data/ml-100k and data/query_document prepared."""
    data_dir = os.environ.get("RECFRAME_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "ml-100k" / "u.data").is_file():
        pytest.skip("$RECFRAME_DATA_DIR/ml-100k/u.data is absent (MovieLens is read from outside the repo, "
                    "never shipped)")
    from recframe.data.sources.movielens import prepare_movielens

    work = tmp_path_factory.mktemp("shipped")
    prepare_movielens("ml-100k", str(work / "data" / "ml-100k"), str(Path(data_dir) / "ml-100k"), download=False)
    subprocess.run([sys.executable, str(ROOT / "examples" / "query_document" / "make_pairs.py"),
                    "--items", "data/ml-100k/items.parquet", "--out", "data/query_document"],
                   cwd=work, check=True, capture_output=True)
    write_synthetic_ml1m(work / "raw" / "ml-1m")
    return work


def test_every_config_is_covered():
    assert len(CONFIGS) >= 15 and "examples/dssm_movielens.config" in CONFIGS


def _losses(model_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (model_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "train"]


@pytest.mark.parametrize("config", CONFIGS)
def test_config_trains_on_a_sample_and_exports(config, workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(workdir)
    if "ml-1m" in Path(ROOT / config).read_text():
        monkeypatch.setenv("RECFRAME_DATA_DIR", str(workdir / "raw"))
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    edit = json.dumps({"train_config.num_steps": STEPS, "train_config.log_step_count_steps": LOG_EVERY})
    path = str(ROOT / config)
    assert train.main(["--pipeline_config", path, "--model_dir", str(model_dir), "--edit_config_json", edit]) == 0

    losses = _losses(model_dir)
    assert len(losses) == STEPS // LOG_EVERY
    assert losses[-1] < losses[0], f"{config}: loss did not go down in {STEPS} steps: {losses}"
    result = json.loads((model_dir / "eval_result.json").read_text())
    test = result["test"]
    rates = {k: v for k, v in test.items() if k.startswith(("hit_rate@", "recall@", "auc", "accuracy"))}
    assert rates and all(0.0 <= v <= 1.0 for v in rates.values()), rates

    assert export.main(["--pipeline_config", path, "--model_dir", str(model_dir),
                        "--export_dir", str(export_dir), "--edit_config_json", edit, "--no_compile"]) == 0
    pipeline = Pipeline.from_file(path, edit)
    user, item = load_tower(export_dir / "user"), load_tower(export_dir / "item")
    state = load_checkpoint(user.meta["checkpoint"]["path"], map_location="cpu")
    model = pipeline.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    users = pq.read_table(pipeline.config.eval_input_path).slice(0, 64)
    items = pq.read_table(pipeline.config.item_input_path).slice(0, 64)
    with torch.no_grad():
        expected_user = model.user_embedding(BatchParser(pipeline.user_features)(users)).numpy()
        expected_item = model.item_embedding(BatchParser(pipeline.item_features)(items)).numpy()
    np.testing.assert_allclose(user.embed(users), expected_user, atol=1e-5)
    np.testing.assert_allclose(item.embed(items), expected_item, atol=1e-5)
