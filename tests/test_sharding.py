"""Embedding tables sharded by TorchRec (train_config.embedding_sharding, issue 14).

The config rules and the missing-TorchRec message need no TorchRec. The rest does (the optional
``torchrec`` extra; .ci/run installs it): one sharded training step in one process equals the
plain step (row-wise Adagrad state included); 2 ranks with table-wise, column-wise and
data-parallel tables equal 1 unsharded rank at the same global batch; a 2-rank checkpoint resumes
on 1 process (another column split) exactly as the 2-rank run goes on; export from a sharded run
gives the plain run's towers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from launch import PYTHON, clean_env, interleave_for_two_ranks, torchrun, train_losses
from synthetic import write_config


def _torchrec_importable() -> bool:
    try:
        import torchrec  # noqa: F401
    except Exception:
        return False
    return True


needs_torchrec = pytest.mark.skipif(
    not _torchrec_importable(),
    reason="TorchRec is not installed: the torchrec extra (docs/distributed.md; on CPU: torch 2.13.0 + "
           "pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 + tensordict pyre-extensions)")

# Every table table-wise, except user_id column-wise (256 wide: two 128-column shards) and
# segment replicated (data_parallel).
SHARDING = ('embedding_sharding { sharding_types: "table_wise" '
            'tables { table: "user_id" sharding_types: "column_wise" } '
            'tables { table: "segment" sharding_types: "data_parallel" } }')


def _problems(tmp_path, extra_train: str, edits: dict | None = None) -> list[str]:
    from recframe.config.loader import load_pipeline_config
    from recframe.config.overrides import apply_edit_config_json
    from recframe.config.validator import validate_pipeline_config

    config, _ = write_config(tmp_path, extra_train=extra_train)
    parsed = load_pipeline_config(config)
    if edits:
        apply_edit_config_json(parsed, edits)
    return [p.split(": ", 1)[1] for p in validate_pipeline_config(parsed, config)]


def test_sharding_config_rules(tmp_path):
    problems = _problems(tmp_path, 'embedding_sharding { sharding_types: ["table_wise", "colum_wise", "row_wise"] '
                                   'tables { table: "item_embb" sharding_types: "data_parallel" } '
                                   'tables { table: "age" } }\n gradient_clip_norm: 1.0',
                         {"train_config.sparse_optimizer": {"adagrad_optimizer": {"initial_accumulator_value": 0.1}}})
    assert problems == [
        "train_config.embedding_sharding.sharding_types[1]: unknown sharding type 'colum_wise' (did you mean "
        "'column_wise'?)",
        'train_config.embedding_sharding.sharding_types[2]: row_wise with device "cpu", expected table_wise, '
        "column_wise or data_parallel (TorchRec shards rows on CUDA only)",
        "train_config.embedding_sharding.tables[0].table: unknown embedding table 'item_embb' (did you mean "
        "'item_emb'?), expected an embedding_name (or the name of a feature with its own table)",
        "train_config.embedding_sharding.tables[1].sharding_types: empty, expected at least one sharding type",
        "train_config.gradient_clip_norm: got 1 with train_config.embedding_sharding: the sharded tables are "
        "updated inside the backward pass (TorchRec's fused optimizer), before any clipping, expected 0",
        "train_config.sparse_optimizer.adagrad_optimizer.initial_accumulator_value: got 0.1 with "
        "train_config.embedding_sharding: the fused kernels start every accumulator at 0, expected 0",
    ]
    problems = _problems(tmp_path / "b", "embedding_sharding { }", {
        "train_config.sparse_optimizer": {"adam_optimizer": {"lr": 0.01}, "dense_gradients": True},
        "train_config.gradient_accumulation_steps": 2})
    assert problems == [
        "train_config.gradient_accumulation_steps: got 2 with train_config.embedding_sharding: the sharded tables "
        "are updated inside the backward pass (TorchRec's fused optimizer), at every micro-batch, expected 1",
        "train_config.sparse_optimizer.dense_gradients: true with train_config.embedding_sharding, whose tables "
        "always take the fused sparse update, expected false",
    ]
    assert _problems(tmp_path / "c", SHARDING) == []


def test_missing_torchrec_says_how_to_install(monkeypatch):
    from recframe.modules.torchrec_tables import MissingTorchRecError, require_torchrec

    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec -> ImportError
    with pytest.raises(MissingTorchRecError) as caught:
        require_torchrec()
    message = str(caught.value)
    assert message.startswith("train_config.embedding_sharding needs TorchRec, which cannot be imported")
    assert "pip install 'recframe[torchrec]'" in message
    assert "pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0" in message


@pytest.fixture
def one_process_group():
    from recframe import distributed

    yield
    distributed.cleanup()


@needs_torchrec
def test_one_sharded_step_equals_the_plain_step(tmp_path, one_process_group):
    """One process: the same batch, one step of row-wise Adagrad -> the same tables and
    accumulators (a column-wise table: one accumulator per column shard), and the plain model's
    state_dict keys."""
    from recframe.pipeline import Pipeline
    from recframe.training.optim import build_optimizer, split_sparse_dense
    from recframe.training.sharding import ShardedEmbeddings

    config, _ = write_config(tmp_path, dropout=0.0, extra_train=SHARDING)
    config_text = Path(config).read_text().replace('feature_name: "user_id" num_buckets: 200 embedding_dim: 16',
                                                   'feature_name: "user_id" num_buckets: 200 embedding_dim: 256')
    Path(config).write_text(config_text)
    pipeline = Pipeline.from_file(config, json.dumps(
        {"train_config.sparse_optimizer": {"rowwise_adagrad_optimizer": {"lr": 0.1}}}))
    parser = pipeline.train_parser()
    batch = next(iter(pipeline.dataset(pipeline.config.train_input_path, parser.columns(), parser, shuffle=False)))
    train_config = pipeline.config.train_config

    torch.manual_seed(0)
    plain = pipeline.build_model()
    initial = {k: v.clone() for k, v in plain.state_dict().items()}
    torch.manual_seed(0)
    model = pipeline.build_model()
    tables, _ = split_sparse_dense(plain)
    plain_optimizer = build_optimizer(tables, train_config.sparse_optimizer)
    plain.compute_loss(plain(batch), batch)["total"].backward()
    plain_optimizer.step()

    sharded = ShardedEmbeddings(model, train_config, torch.device("cpu"))
    assert {t: p.sharding_type for m in sharded.plan.plan.values() for t, p in m.items()} == {
        "user_id": "column_wise", "segment": "data_parallel", "age": "table_wise", "item_emb": "table_wise",
        "category": "table_wise"}
    replicated = build_optimizer(sharded.replicated_tables, train_config.sparse_optimizer, sparse=False)
    loss = model.compute_loss(sharded.dmp(batch), batch)["total"]
    loss.backward()  # the fused optimizer updates the sharded tables here
    replicated.step()

    state, expected = sharded.state_dict(), plain.state_dict()
    assert state.keys() == expected.keys()
    fused = sharded.optimizer_state_dict()["state"]
    assert {k.split(".")[-2] for k in fused} == {"user_id", "age", "item_emb", "category"}  # segment: replicated
    for name, table in zip([n for n, p in plain.named_parameters() if any(p is t for t in tables)], tables):
        grad = table.grad.coalesce().to_dense()
        assert grad.abs().sum() > 0, name  # every table took part in the step
        if name.endswith("user_id.weight"):
            # Column-wise: each 128-column shard keeps its own row-wise accumulator (TorchRec's
            # kernels), so the step differs from the unsharded one by exactly that.
            accumulators = torch.stack([grad[:, :128].pow(2).mean(1), grad[:, 128:].pow(2).mean(1)])
            scale = torch.cat([accumulators[0].sqrt().add(1e-8).unsqueeze(1).expand(-1, 128),
                               accumulators[1].sqrt().add(1e-8).unsqueeze(1).expand(-1, 128)], dim=1)
            want = initial[name] - 0.1 * grad / scale
            np.testing.assert_allclose(fused[name]["momentum1"].numpy(), accumulators.flatten().numpy(), rtol=1e-5)
        else:
            want = expected[name]
            if name in fused:  # row-wise Adagrad: one accumulator per row, as RowWiseAdagrad's "sum"
                np.testing.assert_allclose(fused[name]["momentum1"].numpy(),
                                           plain_optimizer.state[table]["sum"].numpy(), rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(state[name].numpy(), want.numpy(), rtol=0, atol=1e-6, err_msg=name)
    for key, value in expected.items():  # the dense parameters: untouched by either (no dense step)
        if "tables" not in key:
            assert torch.equal(state[key], value), key


def _sharded_configs(tmp_path: Path) -> tuple[str, str, dict]:
    """A 2-rank sharded config (batch 50, model_dir two/) and a 1-process unsharded one (batch
    100, model_dir one/) over the same rows in the same global batches."""
    config, paths = write_config(tmp_path, model_dir=tmp_path / "two", num_epochs=1, batch_size=50, dropout=0.0,
                                 extra_train=f"global_in_batch_negative: true\n  {SHARDING}")
    text = Path(config).read_text().replace('feature_name: "user_id" num_buckets: 200 embedding_dim: 16',
                                            'feature_name: "user_id" num_buckets: 200 embedding_dim: 256')
    Path(config).write_text(text)
    interleaved = tmp_path / "data" / "train_interleaved.parquet"
    interleave_for_two_ranks(paths["train"], str(interleaved), 50)
    one = text.replace(paths["train"], str(interleaved)).replace(str(tmp_path / "two"), str(tmp_path / "one"))
    one = one.replace("batch_size: 50", "batch_size: 100").replace(SHARDING, "")
    (tmp_path / "one.config").write_text(one)
    return config, str(tmp_path / "one.config"), paths


def _edits(optimizer: dict, **more) -> str:
    return json.dumps({"data_config.shuffle": False, "data_config.shuffle_buffer_size": None, "train_config.log_step_count_steps": 1,
                       "data_config.exclude_negatives_field": "hist_item_ids",
                       "train_config.sparse_optimizer": optimizer, **more})


def _one_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=180)


@pytest.mark.slow
@needs_torchrec
def test_two_sharded_ranks_equal_one_unsharded_rank_and_export(tmp_path):
    """SGD (its update is linear in the gradient, so a wrongly scaled gradient shows): 2 ranks,
    tables split table-wise, column-wise and replicated, == 1 process with plain tables."""
    from recframe.serving import load_tower

    two_config, one_config, paths = _sharded_configs(tmp_path)
    edits = _edits({"sgd_optimizer": {"lr": 1.0}})
    two = torchrun(["-m", "recframe.train", "--pipeline_config", two_config, "--edit_config_json", edits],
                   cwd=tmp_path, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _one_process(["recframe.train", "--pipeline_config", one_config, "--edit_config_json", edits], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    losses_two, losses_one = train_losses(tmp_path / "two"), train_losses(tmp_path / "one")
    assert len(losses_two) == len(losses_one) == 20
    np.testing.assert_allclose([v for _, v in losses_two], [v for _, v in losses_one], rtol=1e-4, atol=1e-5)
    assert min(v for _, v in losses_two[-5:]) < losses_two[0][1] - 0.1, losses_two  # it learned
    metrics_two = json.loads((tmp_path / "two" / "eval_result.json").read_text())["eval"]
    metrics_one = json.loads((tmp_path / "one" / "eval_result.json").read_text())["eval"]
    for key in ("hit_rate@50", "ndcg@10", "mrr"):
        assert metrics_two[key] == pytest.approx(metrics_one[key], abs=0.02), key

    # The checkpoint holds whole, plain tables: export reads it as any other.
    for name, config in (("two", two_config), ("one", one_config)):
        done = _one_process(["recframe.export", "--pipeline_config", config, "--export_dir",
                             str(tmp_path / f"export_{name}"), "--no_compile"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    items = pq.read_table(paths["items"])
    valid = pq.read_table(paths["valid"])
    for side, rows in (("item", items), ("user", valid)):
        sharded = load_tower(tmp_path / "export_two" / side).embed(rows)
        unsharded = load_tower(tmp_path / "export_one" / side).embed(rows)
        np.testing.assert_allclose(sharded, unsharded, atol=2e-3, rtol=0, err_msg=side)


@pytest.mark.slow
@needs_torchrec
def test_sharded_checkpoint_resumes_on_another_world_size(tmp_path):
    """Row-wise Adagrad: a 2-rank checkpoint (user_id in two column shards on two ranks) goes on
    in 1 process (two column shards on one rank) exactly as the 2-rank run goes on."""
    two_config, one_config, _ = _sharded_configs(tmp_path)
    edits = _edits({"rowwise_adagrad_optimizer": {"lr": 0.05}})
    first = torchrun(["-m", "recframe.train", "--pipeline_config", two_config, "--edit_config_json", edits],
                     cwd=tmp_path, timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    full_config = tmp_path / "full.config"
    full_config.write_text(Path(two_config).read_text().replace(str(tmp_path / "two"), str(tmp_path / "full")))
    full = torchrun(["-m", "recframe.train", "--pipeline_config", str(full_config), "--edit_config_json",
                     _edits({"rowwise_adagrad_optimizer": {"lr": 0.05}}, **{"train_config.num_epochs": 2})],
                    cwd=tmp_path, timeout=180)
    assert full.returncode == 0, full.stderr[-3000:]

    resumed_config = tmp_path / "resumed.config"
    resumed_config.write_text(Path(one_config).read_text().replace(
        "global_in_batch_negative: true", f"global_in_batch_negative: true\n  {SHARDING}"))
    resumed = _one_process(["recframe.train", "--pipeline_config", str(resumed_config), "--model_dir",
                            str(tmp_path / "two"), "--continue_train", "--edit_config_json",
                            _edits({"rowwise_adagrad_optimizer": {"lr": 0.05}}, **{"train_config.num_epochs": 2})],
                           tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at step 20" in resumed.stdout
    after = train_losses(tmp_path / "two")[20:]
    expected = train_losses(tmp_path / "full")[20:]
    assert len(after) == len(expected) == 20
    np.testing.assert_allclose([v for _, v in after], [v for _, v in expected], rtol=1e-4, atol=1e-5)

    # Without sharding the fused optimizer's state cannot carry over: refused, by name.
    plain = _one_process(["recframe.train", "--pipeline_config", one_config, "--model_dir", str(tmp_path / "two"),
                          "--continue_train", "--edit_config_json", edits], tmp_path)
    assert plain.returncode != 0
    assert "train_config.embedding_sharding: the checkpoint" in plain.stderr
    assert "was written with it" in plain.stderr
