"""User plugins: a model and a tower defined in the user's own module, registered with the
registry and named in the config (plugin_modules, model_class), train, evaluate and export
from the command line with no edit to recframe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recframe.config import parse_pipeline_config, validate_pipeline_config
from recframe.registry import PluginImportError, import_plugin_modules

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402

USER_MODULE = '''
"""A user's own two-tower model: DSSM whose towers scale their output by a learned gate."""
import torch
from torch import nn

from recframe.models import DSSM, Tower
from recframe.registry import MODELS


class GatedTower(Tower):
    """The recframe tower, its output multiplied by sigmoid(gate) per dimension."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = nn.Parameter(torch.full((self.output_dim,), 2.0))

    def forward(self, batch):
        return super().forward(batch) * torch.sigmoid(self.gate)


@MODELS.register()
class GatedDSSM(DSSM):
    tower_class = GatedTower
'''


def write_plugin_run(tmp_path, module: str = "my_models.py") -> tuple[str, dict]:
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    config, paths = synthetic.write_config(tmp_path, num_epochs=1, log_step_count_steps=10)
    text = open(config).read().replace("model_config {", 'model_config {\n  model_class: "GatedDSSM"')
    with open(config, "w") as f:
        f.write(f'plugin_modules: "{module}"\n' + text)
    return config, paths


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """A recframe command in a fresh process run in ``tmp_path`` (where my_models.py is)."""
    env = {**os.environ, "RECFRAME_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def test_model_class_and_plugin_modules_are_validated(tmp_path):
    config, _ = write_plugin_run(tmp_path)
    text = open(config).read()
    # Without the module, the class is unknown: one line naming the field and the way to fix it.
    problems = validate_pipeline_config(parse_pipeline_config(text.replace('plugin_modules: "my_models.py"\n', "")),
                                        "cfg.config")
    assert problems == [
        "cfg.config: model_config.model_class: unknown model class 'GatedDSSM' (did you mean 'DSSM'?), expected a "
        "class registered in "
        "recframe.registry.MODELS (DSSM, DSSMV2); name the module that registers it in plugin_modules"]
    # A module that does not exist or does not import: the field and the cause.
    problems = validate_pipeline_config(parse_pipeline_config(text.replace("my_models.py", "nowhere.py")),
                                        "cfg.config")
    assert len(problems) == 1 and problems[0].startswith(
        "cfg.config: plugin_modules[0]: cannot import plugin module 'nowhere.py': FileNotFoundError: no file ")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginImportError, match=r"cannot import plugin module '.*broken.py': RuntimeError: boom"):
        import_plugin_modules([str(tmp_path / "broken.py")])


@pytest.mark.slow
def test_a_user_model_trains_evaluates_and_exports_from_the_command_line(tmp_path, monkeypatch):
    config, paths = write_plugin_run(tmp_path)
    done = cli(tmp_path, "recframe.validate", "--pipeline_config", config)
    assert done.returncode == 0, done.stderr
    done = cli(tmp_path, "recframe.train", "--pipeline_config", config)
    assert done.returncode == 0, done.stderr
    model_dir = tmp_path / "model"
    result = json.loads((model_dir / "eval_result.json").read_text())
    assert result["test"]["hit_rate@10"] > 0.2  # random ranking: 10 / 200 = 0.05

    # evaluate reproduces the trainer's test metrics from the run's saved pipeline.config
    out = tmp_path / "test_metrics.json"
    done = cli(tmp_path, "recframe.evaluate", "--pipeline_config", str(model_dir / "pipeline.config"),
               "--eval_input_path", paths["test"], "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["hit_rate@10"] == pytest.approx(result["test"]["hit_rate@10"])

    # export: the user's tower, gate included, in a program that loads without the user's module
    done = cli(tmp_path, "recframe.export", "--pipeline_config", str(model_dir / "pipeline.config"),
               "--export_dir", str(tmp_path / "export"), "--no_compile")
    assert done.returncode == 0, done.stderr
    from recframe.pipeline import Pipeline
    from recframe.serving import load_tower
    from recframe.training.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)  # plugin_modules names my_models.py relative to the working directory
    pipeline = Pipeline.from_file(str(model_dir / "pipeline.config"))
    model = pipeline.build_model()
    state = load_checkpoint(model_dir / "checkpoints" / "best.pt")
    assert "user_tower.gate" in state["model"] and type(model.user_tower).__name__ == "GatedTower"
    model.load_state_dict(state["model"])
    model.eval()
    users = pq.read_table(paths["test"]).slice(0, 20)
    with torch.no_grad():
        expected = model.user_embedding(pipeline.eval_user_parser()(users)).numpy()
    exported = load_tower(tmp_path / "export" / "user").embed(users)
    np.testing.assert_allclose(exported, expected, atol=1e-5)
    assert not np.allclose(np.linalg.norm(exported, axis=1), 1.0)  # the gate scaled the unit vectors
