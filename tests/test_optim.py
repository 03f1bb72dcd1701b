"""Optimizers and learning-rate schedules built from config messages."""

import math

import pytest
import torch
from google.protobuf import text_format

from recframe.protos import optimizer_pb2
from recframe.training.lr_schedule import (
    ConstantLearningRate,
    CosineLearningRate,
    ExponentialDecayLearningRate,
    build_lr_scheduler,
)
from recframe.training.optim import build_optimizer, clip_grad_norm_, split_sparse_dense
from recframe.training.rowwise_adagrad import RowWiseAdagrad


def dense_cfg(text: str) -> optimizer_pb2.DenseOptimizer:
    return text_format.Parse(text, optimizer_pb2.DenseOptimizer())


def sparse_cfg(text: str) -> optimizer_pb2.SparseOptimizer:
    return text_format.Parse(text, optimizer_pb2.SparseOptimizer())


def params(n: int = 2) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3)) for _ in range(n)]


# --- optimizers ------------------------------------------------------------------------------

def group(opt: torch.optim.Optimizer) -> dict:
    assert len(opt.param_groups) == 1
    return opt.param_groups[0]


def test_unset_optimizer_is_adam_0_001_dense_and_rowwise_adagrad_sparse():
    for cfg in (None, optimizer_pb2.DenseOptimizer()):
        opt = build_optimizer(params(), cfg)
        assert type(opt) is torch.optim.Adam
        g = group(opt)
        assert g["lr"] == 0.001 and g["betas"] == (0.9, 0.999)
        assert g["eps"] == 1e-8 and g["weight_decay"] == 0.0
    for cfg in (optimizer_pb2.SparseOptimizer(), sparse_cfg("dense_gradients: true")):
        opt = build_optimizer([torch.nn.Parameter(torch.zeros(5, 2))], cfg)
        assert type(opt) is RowWiseAdagrad and group(opt)["lr"] == 0.05 and group(opt)["eps"] == 1e-8


def test_adam_all_fields():
    cfg = dense_cfg("adam_optimizer { lr: 0.003 beta1: 0.8 beta2: 0.99 weight_decay: 0.0001 eps: 1e-6 }")
    g = group(build_optimizer(params(), cfg))
    assert (g["lr"], g["betas"], g["weight_decay"], g["eps"]) == (0.003, (0.8, 0.99), 0.0001, 1e-6)


def test_adamw_all_fields_and_default_decay():
    g = group(build_optimizer(params(), sparse_cfg("adamw_optimizer {} dense_gradients: true")))
    assert g["weight_decay"] == 0.01 and g["lr"] == 0.001
    opt = build_optimizer(params(), sparse_cfg(
        "adamw_optimizer { lr: 0.02 beta1: 0.5 beta2: 0.9 weight_decay: 0.05 eps: 1e-7 } dense_gradients: true"))
    assert type(opt) is torch.optim.AdamW
    g = group(opt)
    assert (g["lr"], g["betas"], g["weight_decay"], g["eps"]) == (0.02, (0.5, 0.9), 0.05, 1e-7)


def test_adagrad_all_fields():
    opt = build_optimizer(params(), sparse_cfg(
        "adagrad_optimizer { lr: 0.05 initial_accumulator_value: 0.1 weight_decay: 0.001 eps: 1e-9 } "
        "dense_gradients: true"))
    assert type(opt) is torch.optim.Adagrad
    g = group(opt)
    assert (g["lr"], g["initial_accumulator_value"], g["weight_decay"], g["eps"]) == (0.05, 0.1, 0.001, 1e-9)
    # the accumulator really starts at initial_accumulator_value
    assert torch.equal(opt.state[g["params"][0]]["sum"], torch.full((3,), 0.1))


def test_sgd_all_fields():
    opt = build_optimizer(params(), dense_cfg(
        "sgd_optimizer { lr: 0.1 momentum: 0.9 weight_decay: 0.0005 nesterov: true }"))
    assert type(opt) is torch.optim.SGD
    g = group(opt)
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.1, 0.9, 0.0005, True)
    g = group(build_optimizer(params(), dense_cfg("sgd_optimizer {}")))
    assert (g["lr"], g["momentum"], g["nesterov"]) == (0.01, 0.0, False)


def test_invalid_values_name_the_field():
    with pytest.raises(ValueError, match=r"train_config\.dense_optimizer\.sgd_optimizer\.nesterov"):
        build_optimizer(params(), dense_cfg("sgd_optimizer { nesterov: true }"))
    with pytest.raises(ValueError, match=r"train_config\.sparse_optimizer\.adam_optimizer\.beta2"):
        build_optimizer(params(), sparse_cfg("adam_optimizer { beta2: 1.0 }"))
    with pytest.raises(ValueError, match=r"my\.path\.adagrad_optimizer\.lr"):
        build_optimizer(params(), dense_cfg("adagrad_optimizer { lr: -1 }"), field_path="my.path")


def test_empty_params_give_no_optimizer():
    assert build_optimizer([], dense_cfg("sgd_optimizer {}")) is None


SPLIT_MODEL = """
feature_configs { id_feature { feature_name: "user_id" num_buckets: 10 embedding_dim: 4 } }
feature_configs { sequence_id_feature { feature_name: "hist" num_buckets: 10 embedding_dim: 4 sequence_length: 3
                                        embedding_name: "item" } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 10 embedding_dim: 4 embedding_name: "item" } }
model_config {
  feature_groups { group_name: "user" feature_names: "user_id" }
  feature_groups { group_name: "hist" feature_names: "hist" group_type: SEQUENCE
                   sequence_encoder { self_attention { num_heads: 1 } } }
  feature_groups { group_name: "item" feature_names: "item_id" }
  dssm_v2 { user_tower { input: ["user", "hist"] mlp { hidden_units: [4] } } item_tower { input: "item" mlp { hidden_units: [4] } } }
}
"""


def test_split_sparse_dense_gives_the_feature_tables_to_the_sparse_optimizer():
    from conftest import build

    model = build(SPLIT_MODEL)[2]
    sparse, dense = split_sparse_dense(model)
    tables = model.user_tower.embedding_group.tables
    ids = lambda ps: [id(p) for p in ps]  # noqa: E731
    assert ids(sparse) == ids([tables["user_id"].weight, tables["item"].weight])  # the shared table once
    # the attention's position embedding is a model parameter: the dense optimizer's
    positions = model.user_tower.embedding_group.encoders["hist"].positions.weight
    assert id(positions) in ids(dense) and id(positions) not in ids(sparse)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids(sparse)) | set(ids(dense)) == trainable and len(sparse) + len(dense) == len(trainable)


# --- sparse gradients ---------------------------------------------------------------------------

def looked_up(table: torch.nn.Embedding, rows: list[int]) -> None:
    """Backward of sum(table(rows) * weights): a row looked up twice gets the sum of both."""
    weights = torch.arange(1.0, 1.0 + len(rows) * table.embedding_dim).view(len(rows), -1)
    (table(torch.tensor(rows)) * weights).sum().backward()


def test_rowwise_adagrad_by_hand_sparse_equals_dense():
    torch.manual_seed(0)
    dense = torch.nn.Embedding(6, 2)
    sparse = torch.nn.Embedding(6, 2, sparse=True)
    sparse.weight.data.copy_(dense.weight.data)
    start = dense.weight.detach().clone()
    opts = [RowWiseAdagrad(t.parameters(), lr=0.5, eps=1e-8, initial_accumulator_value=0.25) for t in (dense, sparse)]
    for table, opt in zip((dense, sparse), opts):
        looked_up(table, [1, 3, 1])
        opt.step()
    # row 1: g = (1 + 5, 2 + 6) = (6, 8): G = 0.25 + (36 + 64) / 2 = 50.25; row 3: g = (3, 4): G = 0.25 + 12.5
    g1, g3 = torch.tensor([6.0, 8.0]), torch.tensor([3.0, 4.0])
    expected = start.clone()
    expected[1] -= 0.5 * g1 / (math.sqrt(50.25) + 1e-8)
    expected[3] -= 0.5 * g3 / (math.sqrt(12.75) + 1e-8)
    for table, opt in zip((dense, sparse), opts):
        assert torch.allclose(table.weight, expected, atol=1e-6)
        assert opt.state[table.weight]["sum"].tolist() == pytest.approx([0.25, 50.25, 0.25, 12.75, 0.25, 0.25])


def test_lazy_adam_moves_only_the_rows_looked_up():
    torch.manual_seed(0)
    table = torch.nn.Embedding(5, 2, sparse=True)
    opt = build_optimizer(table.parameters(), sparse_cfg("adam_optimizer { lr: 0.1 }"))
    assert type(opt) is torch.optim.SparseAdam
    looked_up(table, [0, 2])
    opt.step()
    table.zero_grad()
    before = table.weight.detach().clone()
    looked_up(table, [2])  # row 0 has momentum, but lazy Adam does not move it when it is not looked up
    opt.step()
    assert torch.equal(table.weight[0], before[0]) and not torch.equal(table.weight[2], before[2])
    assert torch.equal(table.weight[[1, 3, 4]], before[[1, 3, 4]])


def test_sparse_gradients_refuse_what_needs_dense_ones():
    table = torch.nn.Embedding(5, 2, sparse=True)
    for text, field in (("adamw_optimizer {}", "adamw_optimizer"), ("adam_optimizer { weight_decay: 0.1 }", "weight_decay"),
                        ("sgd_optimizer { momentum: 0.9 }", "momentum"), ("adagrad_optimizer { weight_decay: 0.1 }",
                                                                          "weight_decay")):
        with pytest.raises(ValueError, match=f"train_config.sparse_optimizer.*{field}.*dense_gradients"):
            build_optimizer(table.parameters(), sparse_cfg(text))


def test_clip_grad_norm_counts_a_sparse_gradient_like_its_dense_twin():
    dense, sparse = torch.nn.Embedding(5, 2), torch.nn.Embedding(5, 2, sparse=True)
    sparse.weight.data.copy_(dense.weight.data)
    linear = torch.nn.Linear(2, 1)
    norms = []
    for table in (dense, sparse):
        linear.zero_grad()
        looked_up(table, [1, 1, 4])
        linear(table(torch.tensor([0]))).sum().backward()
        norms.append(clip_grad_norm_([table.weight, linear.weight, linear.bias], 1.0))
    assert norms[0].item() == pytest.approx(norms[1].item())
    assert torch.allclose(dense.weight.grad, sparse.weight.grad.to_dense())
    total = torch.linalg.vector_norm(torch.cat([dense.weight.grad.flatten(), linear.weight.grad.flatten(),
                                                linear.bias.grad.flatten()]))
    assert total.item() == pytest.approx(1.0, rel=1e-4)  # scaled down to max_norm


# --- learning-rate schedules --------------------------------------------------------------------

def test_constant_with_warmup():
    s = ConstantLearningRate(base_lr=0.1, warmup_steps=4)
    assert [s.factor(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert ConstantLearningRate(0.1).factor(0) == 1.0


def test_exponential_continuous_and_staircase():
    s = ExponentialDecayLearningRate(base_lr=1.0, decay_steps=10, decay_rate=0.5)
    assert s.factor(0) == 1.0
    assert s.factor(10) == 0.5
    assert s.factor(5) == pytest.approx(0.5 ** 0.5)
    assert s.factor(25) == pytest.approx(0.5 ** 2.5)
    st = ExponentialDecayLearningRate(base_lr=1.0, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [st.factor(k) for k in (0, 9, 10, 19, 20, 29)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_exponential_warmup_and_min_floor():
    s = ExponentialDecayLearningRate(base_lr=0.1, decay_steps=2, decay_rate=0.5, staircase=True,
                                     min_learning_rate=0.02, warmup_steps=2)
    # warmup 0.05, 0.1; then t=0,1: 0.1; t=2,3: 0.05; t=4,5: 0.025; t>=6: 0.0125 -> floor 0.02
    lrs = [s.lr(k) for k in range(12)]
    expected = [0.05, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02]
    assert lrs == pytest.approx(expected)


def test_cosine_explicit_decay_steps_and_min():
    s = CosineLearningRate(base_lr=1.0, decay_steps=4, min_learning_rate=0.2, warmup_steps=2)
    # warmup: 0.5, 1.0; t=0..4: 0.2 + 0.8 * (1 + cos(pi t / 4)) / 2; then constant 0.2
    c = math.cos(math.pi / 4)
    expected = [0.5, 1.0, 1.0, 0.2 + 0.4 * (1 + c), 0.6, 0.2 + 0.4 * (1 - c), 0.2, 0.2, 0.2]
    assert [s.lr(k) for k in range(9)] == pytest.approx(expected)


def test_cosine_rest_of_run():
    s = CosineLearningRate(base_lr=2.0, decay_steps=0, warmup_steps=0, total_steps=10)
    assert s.decay_steps == 10
    assert s.lr(5) == pytest.approx(1.0) and s.lr(10) == 0.0 and s.lr(50) == 0.0
    s = CosineLearningRate(base_lr=2.0, decay_steps=0, warmup_steps=4, total_steps=10)
    assert s.decay_steps == 6 and s.lr(7) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="number of training steps is not known"):
        CosineLearningRate(base_lr=1.0, decay_steps=0, total_steps=None)


def _run_lrs(opt, sched, n):
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_build_lr_scheduler_from_config_and_resume():
    p = params(1)
    cfg = dense_cfg("sgd_optimizer { lr: 0.1 } exponential_decay_learning_rate "
                    "{ decay_steps: 1 decay_rate: 0.5 min_learning_rate: 0.01 warmup_steps: 2 }")
    opt = build_optimizer(p, cfg)
    sched = build_lr_scheduler(opt, cfg, total_steps=100)
    lrs = _run_lrs(opt, sched, 8)
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.05, 0.025, 0.0125, 0.01, 0.01])

    # resume: a fresh optimizer + scheduler continue exactly where the state left off,
    # whichever of the two is restored first
    for optimizer_first in (True, False):
        opt2 = build_optimizer(params(1), cfg)
        if optimizer_first:
            opt2.load_state_dict(opt.state_dict())
        sched2 = build_lr_scheduler(opt2, cfg, total_steps=100)
        if not optimizer_first:
            opt2.load_state_dict(opt.state_dict())
        sched2.load_state_dict(sched.state_dict())
        assert sched2.last_epoch == 8
        assert _run_lrs(opt2, sched2, 2) == pytest.approx([0.01, 0.01])
        assert opt2.param_groups[0]["initial_lr"] == 0.1

    # the config, not the checkpoint, defines the schedule: a longer warmup after resume
    cfg3 = dense_cfg("sgd_optimizer { lr: 0.1 } constant_learning_rate { warmup_steps: 10 }")
    opt3 = build_optimizer(params(1), cfg3)
    sched3 = build_lr_scheduler(opt3, cfg3)
    sched3.load_state_dict(sched.state_dict())
    assert opt3.param_groups[0]["lr"] == pytest.approx(0.1 * 9 / 10)


def test_unset_schedule_is_constant_and_min_above_lr_rejected():
    opt = build_optimizer(params(1), dense_cfg("sgd_optimizer { lr: 0.3 }"))
    sched = build_lr_scheduler(opt, dense_cfg("sgd_optimizer { lr: 0.3 }"), total_steps=None)
    assert _run_lrs(opt, sched, 3) == [0.3, 0.3, 0.3]
    cfg = sparse_cfg("cosine_learning_rate { min_learning_rate: 0.5 decay_steps: 3 }")
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(3, 2))], cfg)  # row-wise Adagrad, lr 0.05
    with pytest.raises(ValueError, match=r"train_config\.sparse_optimizer\.cosine_learning_rate\."
                                         r"min_learning_rate = 0\.5 is above"):
        build_lr_scheduler(opt, cfg, total_steps=10)
