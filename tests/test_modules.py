"""Modules: MLP, EmbeddingGroup, PoolingEncoder, VariationalDropout."""

import math

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import features, group, mlp_config
from recframe.batch import Batch, SequenceIds
from recframe.features import BatchParser, hash_bucket
from recframe.config.names import activation_name
from recframe.modules import MLP, EmbeddingGroup, PoolingEncoder, VariationalDropout
from recframe.protos import model_pb2, module_pb2


def layer_types(mlp: MLP) -> list[list[type]]:
    return [[type(m) for m in block] for block in mlp.layers]


# --- MLP ---------------------------------------------------------------------------------------

def test_mlp_relu_300_300_128():
    torch.manual_seed(0)
    mlp = MLP(40, mlp_config('hidden_units: [300, 300, 128] activation: "nn.ReLU"'))
    assert layer_types(mlp) == [[nn.Linear, nn.ReLU]] * 3
    assert [b[0].out_features for b in mlp.layers] == [300, 300, 128] and mlp.layers[0][0].in_features == 40
    assert mlp.output_dim == 128
    x = torch.randn(5, 40)
    # the forward is exactly relu(W3 relu(W2 relu(W1 x)))
    expected = x
    for block in mlp.layers:
        expected = torch.relu(expected @ block[0].weight.T + block[0].bias)
    assert torch.allclose(mlp(x), expected)
    assert (mlp(x) >= 0).all()


def test_mlp_tanh_256x3_with_dropout_after_activation():
    mlp = MLP(8, mlp_config('hidden_units: [256, 256, 256] activation: "tanh" dropout_ratio: 0.2'))
    assert layer_types(mlp) == [[nn.Linear, nn.Tanh, nn.Dropout]] * 3
    assert [b[2].p for b in mlp.layers] == pytest.approx([0.2] * 3)
    mlp.eval()
    x = torch.randn(4, 8)
    assert torch.allclose(mlp(x), torch.tanh(mlp.layers[2][0](torch.tanh(mlp.layers[1][0](torch.tanh(mlp.layers[0][0](x)))))))


def test_mlp_tanh_bn_xavier_normal_init():
    torch.manual_seed(0)
    mlp = MLP(512, mlp_config('hidden_units: [256, 256, 256] activation: "nn.Tanh" use_bn: true '
                              'weight_init: "xavier_normal"'))
    assert layer_types(mlp) == [[nn.Linear, nn.BatchNorm1d, nn.Tanh]] * 3
    for block, fan_in in zip(mlp.layers, (512, 256, 256)):
        linear = block[0]
        expected_std = math.sqrt(2.0 / (fan_in + 256))
        assert linear.weight.std().item() == pytest.approx(expected_std, rel=0.05)
        assert abs(linear.weight.mean().item()) < 0.1 * expected_std
        assert torch.count_nonzero(linear.bias) == 0
    # default init keeps PyTorch's non-zero biases
    default = MLP(16, mlp_config("hidden_units: [8]"))
    assert torch.count_nonzero(default.layers[0][0].bias) > 0


def test_mlp_dropout_before_linear_order_and_per_layer_ratios():
    mlp = MLP(6, mlp_config('hidden_units: [4, 3] dropout_ratio: [0.1, 0.3] dropout_before_linear: true'))
    assert layer_types(mlp) == [[nn.Dropout, nn.Linear, nn.ReLU]] * 2
    assert [b[0].p for b in mlp.layers] == pytest.approx([0.1, 0.3])
    ln = MLP(6, mlp_config('hidden_units: [4] use_ln: true bias: false'))
    assert layer_types(ln) == [[nn.Linear, nn.LayerNorm, nn.ReLU]] and ln.layers[0][0].bias is None


def test_mlp_activations_and_names():
    assert layer_types(MLP(3, mlp_config('hidden_units: [2] activation: "prelu"'))) == [[nn.Linear, nn.PReLU]]
    gelu = MLP(3, mlp_config('hidden_units: [2] activation: "gelu"'))
    assert layer_types(gelu) == [[nn.Linear, nn.GELU]]
    x = torch.randn(4, 3)
    assert torch.allclose(gelu(x), F.gelu(gelu.layers[0][0](x)))
    assert [activation_name(n) for n in ("nn.ReLU", "ReLU", "relu", "nn.LeakyReLU", "nn.Identity")] == \
        ["relu", "relu", "relu", "leaky_relu", "none"]
    with pytest.raises(ValueError, match="unknown activation 'nn.Bogus'"):
        activation_name("nn.Bogus")
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        MLP(3, mlp_config('hidden_units: [2] activation: "swishy"'))
    with pytest.raises(ValueError, match="unknown weight_init"):
        MLP(3, mlp_config('hidden_units: [2] weight_init: "orthogonal"'))
    with pytest.raises(ValueError, match="dropout_ratio has 2 values for 3 hidden_units"):
        MLP(3, mlp_config("hidden_units: [2, 2, 2] dropout_ratio: [0.1, 0.1]"))


# --- EmbeddingGroup ----------------------------------------------------------------------------

FEATURES = (
    'id_feature { feature_name: "user" num_buckets: 6 embedding_dim: 3 }',
    'id_feature { feature_name: "genres" vocab_list: ["a", "b", "c"] separator: "|" embedding_dim: 2 pooling: MEAN }',
    'id_feature { feature_name: "tags" hash_bucket_size: 7 embedding_dim: 2 }',
    'raw_feature { feature_name: "age" value_dim: 2 }',
    'raw_feature { feature_name: "age_b" input_name: "age1" boundaries: [0.5] embedding_dim: 2 }',
    'sequence_id_feature { feature_name: "hist" num_buckets: 6 sequence_length: 3 embedding_dim: 3 embedding_name: "item" }',
    'sequence_id_feature { feature_name: "hist_sum" input_name: "hist" num_buckets: 6 sequence_length: 3 '
    'embedding_dim: 3 embedding_name: "item" pooling: SUM }',
    'id_feature { feature_name: "item_id" num_buckets: 6 embedding_dim: 3 embedding_name: "item" }',
)


def feature_batch():
    feats = features(*FEATURES)
    table = pa.table({
        "user": [1, 4, 5],
        "genres": ["a|c", "", None],
        "tags": [["x", "y", "x"], [], ["z"]],
        "age": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
        "age1": [0.1, 0.5, 0.9],
        "hist": [[1, 2, 3, 4], [5], []],
        "item_id": [2, 3, 4],
    })
    return feats, BatchParser(list(feats.values()))(table, "t")


def test_embedding_group_deep_output_is_concatenation_of_pooled_vectors():
    torch.manual_seed(0)
    feats, batch = feature_batch()
    eg = EmbeddingGroup(feats, [group('group_name: "u" feature_names: ["user", "genres", "tags", "age", "age_b", '
                                      '"hist", "hist_sum"]'),
                                group('group_name: "i" feature_names: "item_id"')])
    # one table per embedding_name: hist, hist_sum and item_id share "item"
    assert sorted(eg.tables) == ["age_b", "genres", "item", "tags", "user"]
    assert eg.table_of("hist") is eg.table_of("item_id") is eg.table_of("hist_sum")
    assert eg.feature_dims("u") == [3, 2, 2, 2, 2, 3, 3] and eg.group_dim("u") == 17
    # default initializer normal(0, 0.01)
    assert eg.tables["user"].weight.std().item() == pytest.approx(0.01, rel=0.6)

    W = {k: t.weight.detach() for k, t in eg.tables.items()}
    zero2, zero3 = torch.zeros(2), torch.zeros(3)

    def tag(value: str) -> int:
        return int(hash_bucket([value], 7)[0])

    rows = [
        [W["user"][1], (W["genres"][1] + W["genres"][3]) / 2, 2 * W["tags"][tag("x")] + W["tags"][tag("y")],
         torch.tensor([1.0, 2.0]), W["age_b"][0], W["item"][2:5].mean(0), W["item"][2:5].sum(0)],
        [W["user"][4], zero2, zero2, torch.tensor([3.0, 4.0]), W["age_b"][1], W["item"][5], W["item"][5]],
        [W["user"][5], zero2, W["tags"][tag("z")], torch.tensor([5.0, 6.0]), W["age_b"][1], zero3, zero3],
    ]
    expected = torch.stack([torch.cat(r) for r in rows])
    out = eg(batch)
    assert set(out) == {"u", "i"}
    assert torch.allclose(out["u"], expected, atol=1e-7)
    assert torch.allclose(out["i"], W["item"][[2, 3, 4]])
    assert set(eg(batch, ["i"])) == {"i"}


def test_shared_table_in_two_groups_gets_gradient_from_both():
    feats, batch = feature_batch()
    eg = EmbeddingGroup(feats, [group('group_name: "u" feature_names: "hist"'),
                                group('group_name: "i" feature_names: "item_id"')])
    assert len(list(eg.parameters())) == 1
    eg(batch, ["u"])["u"].sum().backward()
    # hist rows: [2, 3, 4] mean -> 1/3 each; [5] -> 1; empty row -> nothing
    grad = eg.tables["item"].weight.grad[:, 0]
    assert grad.tolist() == pytest.approx([0.0, 0.0, 1 / 3, 1 / 3, 1 / 3, 1.0])


def sequence_batch(ids, lengths):
    ids = torch.tensor(ids)
    return Batch(batch_size=ids.shape[0], sequence={
        "hist": SequenceIds(ids, torch.tensor(lengths)),
        "hist_sum": SequenceIds(ids.clone(), torch.tensor(lengths)),
    })


def test_sequence_group_pooling_encoder_mean_is_masked_mean_and_ignores_padding():
    torch.manual_seed(0)
    feats = features(*FEATURES)
    seq_group = group('group_name: "s" feature_names: "hist" group_type: SEQUENCE')
    sum_group = group('group_name: "t" feature_names: ["hist", "hist_sum"] group_type: SEQUENCE '
                      'sequence_encoder { pooling_encoder { pooling_type: "sum" } }')
    deep = group('group_name: "d" feature_names: ["hist", "hist_sum"]')
    eg = EmbeddingGroup(feats, [seq_group, sum_group, deep])
    assert isinstance(eg.encoders["s"], PoolingEncoder) and eg.group_dim("s") == 3 and eg.group_dim("t") == 6
    W = eg.tables["item"].weight.detach()
    batch = sequence_batch([[1, 2, 0], [3, 0, 0], [0, 0, 0]], [2, 1, 0])
    out = eg(batch)
    mean = torch.stack([(W[1] + W[2]) / 2, W[3], torch.zeros(3)])
    total = torch.stack([W[1] + W[2], W[3], torch.zeros(3)])
    assert torch.allclose(out["s"], mean)
    assert torch.allclose(out["t"], torch.cat([total, total], dim=1))
    assert torch.allclose(out["d"], torch.cat([mean, total], dim=1))
    # garbage at padded positions changes nothing
    noisy = sequence_batch([[1, 2, 5], [3, 4, 4], [5, 1, 2]], [2, 1, 0])
    for name, value in eg(noisy).items():
        assert torch.equal(value, out[name]), name


def test_pooling_encoder_direct():
    enc = PoolingEncoder(2, model_pb2.PoolingEncoder())
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert enc(x, mask).tolist() == [[2.0, 3.0]]
    assert PoolingEncoder(2, model_pb2.PoolingEncoder(pooling_type="sum"))(x, mask).tolist() == [[4.0, 6.0]]


def test_table_initializers():
    feats = features(
        'id_feature { feature_name: "a" num_buckets: 2000 embedding_dim: 8 initializer { uniform { a: 0.5 b: 0.7 } } }',
        'id_feature { feature_name: "b" num_buckets: 2000 embedding_dim: 8 initializer { normal { mean: 3.0 std: 0.5 } } }',
    )
    eg = EmbeddingGroup(feats, [group('group_name: "g" feature_names: ["a", "b"]')])
    a, b = eg.tables["a"].weight, eg.tables["b"].weight
    assert a.min() >= 0.5 and a.max() <= 0.7
    assert b.mean().item() == pytest.approx(3.0, abs=0.05) and b.std().item() == pytest.approx(0.5, rel=0.05)


# --- VariationalDropout ------------------------------------------------------------------------

def vd_config(text: str = "") -> module_pb2.VariationalDropout:
    from google.protobuf import text_format
    return text_format.Parse(text, module_pb2.VariationalDropout())


def test_variational_dropout_penalty_equals_hand_computation():
    vd = VariationalDropout(["a", "b", "c"], [2, 1, 3], vd_config("regularization_lambda: 0.5"))
    logits = [0.0, math.log(3.0), -math.log(4.0)]  # p = 0.5, 0.75, 0.2
    with torch.no_grad():
        vd.drop_logit.copy_(torch.tensor(logits))
    x = torch.randn(4, 6)
    for training in (True, False):
        vd.train(training)
        vd(x)
        penalty = vd.penalty(x.shape[0])
        assert penalty.item() == pytest.approx(0.5 / 4 * ((1 - 0.5) + (1 - 0.75) + (1 - 0.2)))


def test_variational_dropout_initial_probability_and_eval_scaling():
    vd = VariationalDropout(["a", "b"], [2, 3], vd_config("initial_drop_probability: 0.3"))
    assert vd.drop_probability().tolist() == pytest.approx([0.3, 0.3])
    with torch.no_grad():
        vd.drop_logit.copy_(torch.tensor([math.log(0.25 / 0.75), math.log(0.9 / 0.1)]))  # p = 0.25, 0.9
    vd.eval()
    x = torch.arange(1.0, 11.0).reshape(2, 5)
    out = vd(x)
    scale = torch.tensor([0.75, 0.75, 0.1, 0.1, 0.1])
    assert torch.allclose(out, x * scale)
    assert vd.feature_ranking() == [("a", pytest.approx(0.75)), ("b", pytest.approx(0.1))]


def test_variational_dropout_training_mask_follows_drop_probability():
    torch.manual_seed(0)
    vd = VariationalDropout(["keep", "drop"], [1, 1], vd_config("temperature: 0.01"))
    with torch.no_grad():
        vd.drop_logit.copy_(torch.tensor([math.log(0.1 / 0.9), math.log(0.8 / 0.2)]))  # p = 0.1, 0.8
    vd.train()
    out = vd(torch.ones(20000, 2))
    # with a low temperature the mask is almost binary: mean keep ~ 1 - p
    assert out.mean(0).tolist() == pytest.approx([0.9, 0.2], abs=0.02)
    # and the penalty is differentiable in the drop logits
    penalty = vd.penalty(2)
    penalty.backward()
    assert (vd.drop_logit.grad < 0).all()  # raising p lowers the penalty


def test_embedding_wise_variational_dropout_logits_eval_mask_importance_and_penalty():
    """embedding_wise: one logit per dimension (D = 2 + 3), the eval mask is 1 - p of each
    dimension, a feature's importance the mean keep of its dimensions, and the penalty
    lambda / B * sum over the D dimensions of (1 - p)."""
    per_feature = VariationalDropout(["a", "b"], [2, 3], vd_config())
    assert per_feature.drop_logit.shape == (2,) and not per_feature.embedding_wise
    vd = VariationalDropout(["a", "b"], [2, 3], vd_config("embedding_wise: true initial_drop_probability: 0.3 "
                                                          "regularization_lambda: 0.5"))
    assert vd.embedding_wise and vd.drop_logit.shape == (5,)
    assert vd.drop_probability().tolist() == pytest.approx([0.3] * 5)
    p = torch.tensor([0.1, 0.2, 0.5, 0.6, 0.9])
    with torch.no_grad():
        vd.drop_logit.copy_(torch.log(p / (1 - p)))
    keep = [0.9, 0.8, 0.5, 0.4, 0.1]
    assert vd.dimension_keep_probability().tolist() == pytest.approx(keep)
    vd.eval()
    x = torch.arange(1.0, 11.0).reshape(2, 5)
    assert torch.allclose(vd(x), x * torch.tensor(keep))
    assert vd.feature_keep_probability().tolist() == pytest.approx([0.85, (0.5 + 0.4 + 0.1) / 3])
    assert vd.feature_importance() == {"a": pytest.approx(0.85), "b": pytest.approx(1 / 3)}
    assert vd.feature_ranking() == [("a", pytest.approx(0.85)), ("b", pytest.approx(1 / 3))]
    for training in (True, False):
        vd.train(training)
        vd(x)
        assert vd.penalty(4).item() == pytest.approx(0.5 / 4 * sum(keep))
    # the per-feature module's eval mask, for comparison: each feature's keep repeated over its slice
    with torch.no_grad():
        per_feature.drop_logit.copy_(torch.tensor([math.log(0.25 / 0.75), 0.0]))  # p = 0.25, 0.5
    assert per_feature.dimension_keep_probability().tolist() == pytest.approx([0.75, 0.75, 0.5, 0.5, 0.5])


def test_embedding_wise_training_mask_is_drawn_per_dimension():
    """Per feature, the dimensions of a slice share one mask value per row; embedding-wise each
    dimension draws its own, with mean 1 - p of that dimension."""
    torch.manual_seed(0)
    p = torch.tensor([0.1, 0.8, 0.5])
    per_feature = VariationalDropout(["a"], [3], vd_config("temperature: 0.01"))
    embedding_wise = VariationalDropout(["a"], [3], vd_config("temperature: 0.01 embedding_wise: true"))
    with torch.no_grad():
        per_feature.drop_logit.fill_(0.0)  # p = 0.5
        embedding_wise.drop_logit.copy_(torch.log(p / (1 - p)))
    x = torch.ones(20000, 3)
    shared = per_feature.train()(x)
    assert torch.equal(shared[:, 0], shared[:, 1]) and torch.equal(shared[:, 1], shared[:, 2])
    own = embedding_wise.train()(x)
    assert own.mean(0).tolist() == pytest.approx([0.9, 0.2, 0.5], abs=0.02)
    # independent draws: dimensions 0 (keep 0.9) and 2 (keep 0.5) differ in about 0.9 * 0.5 + 0.1 * 0.5 of the rows
    assert ((own[:, 0] > 0.5) != (own[:, 2] > 0.5)).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_feature_ranking_orders_by_keep_probability():
    vd = VariationalDropout(["a", "b", "c", "d"], [1, 1, 1, 1], vd_config())
    with torch.no_grad():
        vd.drop_logit.copy_(torch.tensor([0.5, -2.0, 3.0, -0.5]))
    ranking = vd.feature_ranking()
    assert [name for name, _ in ranking] == ["b", "d", "a", "c"]
    assert [keep for _, keep in ranking] == pytest.approx([1 - 1 / (1 + math.exp(-v)) for v in (-2.0, -0.5, 0.5, 3.0)])
