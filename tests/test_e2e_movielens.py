"""End to end on MovieLens-100K: examples/dssm_movielens.config, shortened to 3 epochs.

Needs the raw GroupLens files in ``$RECFRAME_DATA_DIR/ml-100k`` (MovieLens may not be
redistributed, so the project never ships it); skipped otherwise. About 20-40 s on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import quickstart_data_edit
from recframe.cli import train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dssm_movielens.config"

pytestmark = pytest.mark.slow


@pytest.fixture
def one_thread():
    # On a small shared machine, intra-op threads competing with other processes make
    # training several times slower; one thread is fastest there.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_dssm_movielens_example_3_epochs(raw_dir, tmp_path, one_thread):
    data = tmp_path / "data"
    model_dir = tmp_path / "model"
    edit = {"train_config.num_epochs": 3, **quickstart_data_edit(data), "model_dir": str(model_dir)}
    assert train.main(["--pipeline_config", str(EXAMPLE), "--edit_config_json", json.dumps(edit)]) == 0

    result = json.loads((model_dir / "eval_result.json").read_text())
    # 512 rows per batch over the 100000 - 2 * 943 training rows: 192 steps per epoch.
    assert result["step"] == 3 * 192
    for split in ("eval", "test"):
        assert result[split]["num_queries"] == 943
        assert result[split]["num_items"] == 1682
    # Excluding seen items, chance is ~50 / 1600 = 0.03 and popularity ~0.2.
    assert result["test"]["hit_rate@50"] > 0.25
    assert result["eval"]["hit_rate@50"] > 0.25
    log = [json.loads(line) for line in (model_dir / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [192, 384, 576]
    assert evals[-1]["hit_rate@50"] > evals[0]["hit_rate@50"]
    # Every output the README's quick start section promises (the install brings what they need).
    for name in ("checkpoints/best.pt", "eval_result.json", "log.jsonl", "loss.png", "eval_metrics.png",
                 "recall_at_k.png", "popularity.png", "test_analysis.json", "pipeline.config"):
        assert (model_dir / name).is_file() and (model_dir / name).stat().st_size > 0, name
    assert list((model_dir / "tensorboard").glob("events.out.tfevents.*"))
    analysis = json.loads((model_dir / "test_analysis.json").read_text())
    buckets = analysis["popularity"]
    assert len(buckets) == 5 and sum(b["queries"] for b in buckets) == 943
    # The popular targets are found far more often than the rare ones (what logQ works against).
    assert buckets[-1]["recall"] > buckets[0]["recall"]
