"""Run outputs: log.jsonl, TensorBoard, progress display, metric table, curves."""

import io
import json
import logging
import math
import sys

import pytest
import torch

from recframe.training import plots, run_log
from recframe.training.plots import read_curves, write_curves
from recframe.metrics.table import format_metrics_table
from recframe.training.run_log import ProgressBar, RunLogger


# --- RunLogger --------------------------------------------------------------------------------

def test_jsonl_records_flushed_and_appended(tmp_path):
    logger = RunLogger(tmp_path, enable_tensorboard=False)
    logger.log({"type": "train", "step": 100, "epoch": 0, "loss": torch.tensor(0.5), "time": 1.0})
    # flushed: readable before close
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"type": "train", "step": 100, "epoch": 0, "loss": 0.5, "time": 1.0}]
    rec = logger.log({"type": "eval", "step": 100, "epoch": 0, "hit_rate@10": 0.25})
    assert isinstance(rec["time"], float)  # wall time added
    logger.close()
    logger.close()  # idempotent
    with RunLogger(tmp_path, enable_tensorboard=False) as again:  # continue_train: appends
        again.log({"type": "train", "step": 200, "epoch": 1, "loss": 0.25, "time": 2.0})
    recs = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["type"], r["step"]) for r in recs] == [("train", 100), ("eval", 100), ("train", 200)]
    assert recs[1]["hit_rate@10"] == 0.25


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path) as logger:
        assert logger.tensorboard_enabled
        logger.log({"type": "train", "step": 1, "epoch": 0, "loss": 2.0})
        logger.log({"type": "train", "step": 2, "epoch": 0, "loss": 1.5})
        logger.log({"type": "eval", "step": 2, "epoch": 0, "ndcg@10": 0.125, "note": "text"})
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["eval/ndcg@10", "train/loss"]
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.0), (2, 1.5)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/ndcg@10")] == [(2, 0.125)]


def test_without_tensorboard_warns_once_and_still_writes_jsonl(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(run_log, "_tensorboard_warned", False)
    with caplog.at_level(logging.WARNING, logger="recframe"):
        a = RunLogger(tmp_path / "a")
        b = RunLogger(tmp_path / "b")
    assert not a.tensorboard_enabled and not b.tensorboard_enabled
    warnings = [r for r in caplog.records if "pip install tensorboard" in r.getMessage()]
    assert len(warnings) == 1
    a.log({"type": "train", "step": 1, "epoch": 0, "loss": 1.0})
    a.close(), b.close()
    assert json.loads((tmp_path / "a" / "log.jsonl").read_text())["loss"] == 1.0
    assert not (tmp_path / "a" / "tensorboard").exists()


# --- ProgressBar -----------------------------------------------------------------------------

def test_progress_lines_when_not_a_tty():
    out = io.StringIO()  # not a TTY -> summary lines
    bar = ProgressBar(total=10, log_every=5, stream=out)
    assert not bar.bar_enabled
    printed = [bar.update(s, loss=torch.tensor(0.123456), samples=32) for s in range(1, 11)]
    bar.close()
    assert [p is not None for p in printed] == [False] * 4 + [True] + [False] * 4 + [True]
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("train: step 5/10 (50.0%) loss 0.1235 samples/s ")
    assert " eta " in lines[0] and lines[1].startswith("train: step 10/10 (100.0%)")
    assert lines[1].endswith("eta 0:00:00")


def test_progress_env_disables_bar_and_quiet_prints_nothing(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("RECFRAME_NO_PROGRESS", "1")
    assert not ProgressBar(total=4, stream=Tty()).bar_enabled
    monkeypatch.delenv("RECFRAME_NO_PROGRESS")
    tty = Tty()
    with ProgressBar(total=4, log_every=1, stream=tty) as bar:
        assert bar.bar_enabled
        for s in range(1, 5):
            assert bar.update(s, loss=0.5, samples=8) is None
    assert "4/4" in tty.getvalue()  # tqdm drew the bar
    quiet_out = io.StringIO()
    q = ProgressBar(total=4, log_every=1, quiet=True, stream=quiet_out)
    for s in range(1, 5):
        q.update(s, loss=0.5)
    q.write("hello")
    assert quiet_out.getvalue() == ""


def test_progress_unknown_total_and_resume():
    out = io.StringIO()
    bar = ProgressBar(total=None, log_every=2, initial=100, stream=out)
    bar.update(101, loss=1.0)
    line = bar.update(102, loss=0.75, samples=10)
    assert line.startswith("train: step 102 loss 0.7500 samples/s ") and "eta" not in line


# --- format_metrics_table ----------------------------------------------------------------------

def test_metrics_table_layout():
    metrics = {
        "hit_rate@10": 0.1, "recall@10": 0.1, "ndcg@10": 0.05,
        "hit_rate@50": 0.3, "recall@50": 0.3, "ndcg@50": 0.09,
        "hit_rate@100": 0.45, "recall@100": 0.45,  # ndcg@100 missing
        "raw_ndcg@10": 0.15, "raw_hit_rate@10": 0.2, "precision@10": 0.01,
        "mrr": 0.04, "raw_mrr": torch.tensor(0.0625), "num_users": 943,
    }
    assert format_metrics_table(metrics) == "\n".join([
        "K    hit_rate  recall  ndcg    precision  raw_hit_rate  raw_ndcg",
        "10   0.1000    0.1000  0.0500  0.0100     0.2000        0.1500",
        "50   0.3000    0.3000  0.0900  -          -             -",
        "100  0.4500    0.4500  -       -          -             -",
        "",
        "mrr        0.0400",
        "raw_mrr    0.0625",
        "num_users  943",
    ])
    assert format_metrics_table({"mrr": 0.5}, title="test") == "test\nmrr  0.5000"


# --- plots -------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_log(path):
    recs = [
        {"type": "train", "step": 10, "epoch": 0, "loss": 2.0, "time": 1.0},
        {"type": "train", "step": 20, "epoch": 0, "loss": 1.5, "lr": 0.001, "time": 2.0},
        {"type": "eval", "step": 20, "epoch": 0, "hit_rate@10": 0.1, "hit_rate@50": 0.3,
         "mrr": 0.05, "time": 3.0},
        {"type": "train", "step": 30, "epoch": 1, "loss": 1.0, "time": 4.0},
        # resumed from the step-20 checkpoint: step 30 replayed, the last value wins
        {"type": "train", "step": 30, "epoch": 1, "loss": 0.9, "time": 5.0},
        {"type": "eval", "step": 40, "epoch": 1, "hit_rate@10": 0.2, "hit_rate@50": 0.4,
         "mrr": 0.07, "time": 6.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"type": "train", "st')


def test_read_curves_values(tmp_path):
    log = tmp_path / "log.jsonl"
    _write_log(log)  # the last line is cut (crash): skipped
    assert read_curves(log) == {
        "train/loss": ([10, 20, 30], [2.0, 1.5, 0.9]),
        "train/lr": ([20], [0.001]),
        "eval/hit_rate@10": ([20, 40], [0.1, 0.2]),
        "eval/hit_rate@50": ([20, 40], [0.3, 0.4]),
        "eval/mrr": ([20, 40], [0.05, 0.07]),
    }


def test_write_curves_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    log = tmp_path / "log.jsonl"
    _write_log(log)
    out = tmp_path / "plots"
    written = write_curves(log, out)
    assert written == [str(out / "loss.png"), str(out / "eval_metrics.png")]
    for p in written:
        with open(p, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE
    assert sorted(x.name for x in out.iterdir()) == ["eval_metrics.png", "loss.png"]


def test_write_curves_without_matplotlib(tmp_path, monkeypatch, caplog):
    log = tmp_path / "log.jsonl"
    _write_log(log)
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with caplog.at_level(logging.WARNING, logger="recframe"):
        assert write_curves(log, tmp_path / "plots") == []
    assert any("pip install matplotlib" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "plots").exists()


def test_metric_groups_panel_per_metric():
    """One panel per metric: raw_ joins its metric (dashed), recall equal to hit rate and the
    data's constants (num_queries, num_items) get none."""
    curves = {"train/loss": ([1], [1.0]), "eval/ndcg@50": ([1], [0.1]),
              "eval/ndcg@10": ([1], [0.1]), "eval/mrr": ([1], [0.1]), "eval/num_items": ([1], [9.0])}
    curves["eval/raw_hit_rate@10"] = ([1], [0.2])
    curves["eval/hit_rate@10"] = ([1], [0.2])
    curves["eval/recall@10"] = ([1], [0.2])  # one target per query: the same as hit rate
    groups = plots._metric_groups(curves)
    assert groups == {"hit_rate": ["eval/hit_rate@10", "eval/raw_hit_rate@10"],
                      "ndcg": ["eval/ndcg@10", "eval/ndcg@50"], "mrr": ["eval/mrr"]}
    assert list(groups) == ["hit_rate", "ndcg", "mrr"]
    curves["eval/recall@10"] = ([1], [0.3])  # several targets per query: recall gets its panel
    assert list(plots._metric_groups(curves)) == ["hit_rate", "recall", "ndcg", "mrr"]
    assert math.isclose(curves["eval/ndcg@10"][1][0], 0.1)
