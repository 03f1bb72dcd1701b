"""Sequence encoders (self-attention, time decay), sequence raw features, dense projection."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import build, feature, parse_batch
from recframe.batch import SequenceValues
from recframe.config import validate_pipeline_config
from recframe.features import BatchParser
from recframe.modules.sequence_encoders import RandDropout, SelfAttentionEncoder, TimeDecayPoolingEncoder
from recframe.protos import model_pb2


def attention(**fields) -> SelfAttentionEncoder:
    torch.manual_seed(0)
    return SelfAttentionEncoder(8, model_pb2.SelfAttentionEncoder(**fields), sequence_length=5)


def test_attention_output_ignores_padded_positions_bitwise():
    for pooling in ("mean", "last"):
        enc = attention(num_layers=2, num_heads=2, dropout=0.1, pooling=pooling, output_dim=3).eval()
        table = torch.nn.Embedding(20, 8)
        ids = torch.tensor([[1, 2, 3, 0, 0], [4, 0, 0, 0, 0], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0]])
        lengths = torch.tensor([3, 1, 5, 0])
        mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)
        other = torch.where(mask, ids, torch.randint(1, 20, ids.shape))  # change every padded id
        assert not torch.equal(other, ids)
        with torch.no_grad():
            out, out_other = enc(table(ids), mask), enc(table(other), mask)
        assert out.shape == (4, 3) and torch.isfinite(out).all()
        assert torch.equal(out, out_other)
        assert torch.equal(out[3], enc.projection.bias.detach())  # no valid position: zeros, then the projection


def test_attention_last_pooling_equals_the_full_last_layer_at_the_last_valid_position():
    # "last" computes only the most recent position in the final layer; it must equal that
    # position of the full layer output (what the other positions would have been is discarded).
    for num_layers in (1, 2):
        torch.manual_seed(num_layers)
        enc = attention(num_layers=num_layers, num_heads=2, dropout=0.0, pooling="last").eval()
        x = torch.randn(3, 5, 8)
        mask = torch.tensor([[True, True, True, False, False], [True] * 5, [True] + [False] * 4])
        captured = {}
        enc.layers[-1].register_forward_pre_hook(lambda m, args: captured.setdefault("in", args[:2]))
        with torch.no_grad():
            out = enc(x, mask)
            full = enc.layers[-1](*captured["in"])
        assert full.shape == (3, 5, 8)
        for row, last in enumerate((2, 4, 0)):
            torch.testing.assert_close(out[row], full[row, last], rtol=0, atol=1e-6)
        assert not torch.allclose(out[0], full[0, 1])


def test_attention_one_query_path_has_the_gradients_of_the_full_layer():
    # The one-query path never projects keys and values per position (it folds the key and value
    # weights into the query side); its gradients must still be those of the full layer.
    torch.manual_seed(3)
    layer = attention(num_layers=1, num_heads=2, dropout=0.0, pooling="last").layers[0]
    mask = torch.tensor([[True, True, True, False, False], [True] * 5, [True] + [False] * 4])
    attend = mask.view(3, 1, 1, 5)
    last = torch.tensor([2, 4, 0])
    target = torch.randn(3, 8)
    h = torch.randn(3, 5, 8)
    grads = []
    for one_query in (True, False):
        layer.zero_grad()
        x = h.clone().requires_grad_(True)
        out = layer(x, attend, query=last).squeeze(1) if one_query else layer(x, attend)[torch.arange(3), last]
        (out * target).sum().backward()
        grads.append({"x": x.grad, **{name: p.grad.clone() for name, p in layer.named_parameters()}})
    fast, full = grads
    for name in full:
        torch.testing.assert_close(fast[name], full[name], rtol=1e-4, atol=1e-5, msg=name)
    assert fast["qkv.weight"][8:].abs().sum() > 0  # the key and value weights do learn
    assert fast["x"][0, 3:].abs().sum() == 0  # nothing flows to padded positions


def test_rand_dropout_keeps_1_minus_p_scaled_and_passes_the_mask_to_the_gradient():
    torch.manual_seed(0)
    dropout = RandDropout(0.3)
    x = torch.full((1000, 1000), 2.0, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.003
    assert torch.allclose(y[kept], torch.tensor(2.0 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.7)
    assert torch.equal(dropout.eval()(x), x)
    assert torch.equal(RandDropout(1.0)(x), torch.zeros_like(x))


def test_time_decay_weights_for_known_timestamps():
    enc = TimeDecayPoolingEncoder(2, model_pb2.TimeDecayPoolingEncoder(
        tau_seconds=100.0, timestamp_feature="ts", sample_time_feature="now", normalize=False))
    ts = torch.tensor([[0.0, 50.0, 100.0, 0.0], [1000.0, 1300.0, 0.0, 0.0]])
    now = torch.tensor([[100.0], [1200.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    w = enc.weights(ts, now, mask)
    expected = torch.tensor([[math.exp(-1.0), math.exp(-0.5), 1.0, 0.0],
                             [math.exp(-2.0), 1.0, 0.0, 0.0]])  # the future item (1300 > 1200) has age 0
    assert torch.allclose(w, expected, rtol=1e-6, atol=0)
    x = torch.randn(2, 4, 2)
    out = enc(x, mask, {"ts": ts, "now": now})
    assert torch.allclose(out, (x * expected.unsqueeze(-1)).sum(1), atol=1e-6)
    enc.normalize = True
    w = enc.weights(ts, now, mask)
    assert torch.allclose(w, expected / expected.sum(1, keepdim=True), rtol=1e-6)
    # very old histories do not underflow to 0/0; an empty row gives zeros
    w = enc.weights(torch.tensor([[0.0, 10.0], [0.0, 0.0]]), torch.tensor([[1e9], [5.0]]),
                    torch.tensor([[True, True], [False, False]]))
    assert torch.allclose(w, torch.tensor([[math.exp(-0.1) / (1 + math.exp(-0.1)), 1 / (1 + math.exp(-0.1))],
                                           [0.0, 0.0]]), rtol=1e-5)


def test_sequence_raw_feature_keeps_the_last_values_aligned():
    f = feature('sequence_raw_feature { feature_name: "ts" sequence_length: 3 }')
    parsed = f.parse(pa.array([[1, 2, 3, 4], [5], None, []]))
    assert isinstance(parsed, SequenceValues) and parsed.values.dtype == torch.float32
    assert parsed.values.tolist() == [[2, 3, 4], [5, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert parsed.lengths.tolist() == [3, 1, 0, 0]
    delimited = feature('sequence_raw_feature { feature_name: "ts" sequence_length: 3 sequence_delim: "|" }')
    assert delimited.parse(pa.array(["7|8", ""])).values.tolist() == [[7, 8, 0], [0, 0, 0]]


MODEL = """
train_input_path: "t" eval_input_path: "e" item_input_path: "i" model_dir: "m"
data_config { item_id_field: "item_id" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 16 embedding_dim: 8 } }
feature_configs { raw_feature { feature_name: "activity" value_dim: 2 } }
feature_configs { raw_feature { feature_name: "now" } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 16 embedding_dim: 8 embedding_name: "item" } }
feature_configs { text_feature { feature_name: "title" hash_bucket_size: 256 embedding_dim: 8 word_unigrams: true } }
feature_configs { sequence_id_feature { feature_name: "hist" num_buckets: 16 embedding_dim: 8
                                        embedding_name: "item" sequence_length: 4 } }
feature_configs { sequence_raw_feature { feature_name: "hist_ts" sequence_length: 4 } }
model_config {
  feature_groups { group_name: "user" feature_names: "user_id" }
  feature_groups { group_name: "dense" feature_names: "activity" dense_projection { output_dim: 4 activation: "tanh" } }
  feature_groups { group_name: "history" feature_names: HISTORY group_type: SEQUENCE sequence_encoder { ENCODER } }
  feature_groups { group_name: "item" feature_names: ["item_id", "title"] }
  dssm_v2 { user_tower { input: ["user", "dense", "history"] input_layer_norm: true mlp { hidden_units: [16] } }
            item_tower { input: "item" mlp { hidden_units: [16] } } output_dim: 8 }
}
"""

ENCODERS = {
    "self_attention": ('"hist"', "self_attention { num_layers: 1 num_heads: 2 dropout: 0.0 pooling: \"last\" }"),
    "time_decay": ('["hist", "hist_ts", "now"]',
                   'time_decay_pooling { tau_seconds: 100 timestamp_feature: "hist_ts" sample_time_feature: "now" }'),
}


def model_data(n=16):
    rng = np.random.default_rng(0)
    hist = [[int(i) for i in rng.integers(0, n, size=int(rng.integers(1, 5)))] for _ in range(n)]
    return pa.table({
        "user_id": np.arange(n), "activity": [[float(u % 3), float(u % 5)] for u in range(n)],
        "now": np.full(n, 1000.0), "item_id": np.roll(np.arange(n), 3),
        "title": [f"Movie {u} part {u % 4}" for u in range(n)], "hist": hist,
        "hist_ts": [[1000.0 - 10 * (len(h) - j) for j in range(len(h))] for h in hist],
    })


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_model_with_each_encoder_validates_and_trains(encoder):
    history, text = ENCODERS[encoder]
    config = MODEL.replace("HISTORY", history).replace("ENCODER", text)
    torch.manual_seed(0)
    cfg, feats, model = build(config)
    assert validate_pipeline_config(cfg, "t.config") == []
    batch = parse_batch(cfg, feats, model_data())
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        model.train()
        loss = model.compute_loss(model(batch), batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert isinstance(model.user_tower.input_norm, torch.nn.LayerNorm)
    assert model.user_tower.embedding_group.group_dim("dense") == 4


def problems(config: str) -> list[str]:
    from conftest import pipeline
    return validate_pipeline_config(pipeline(config), "t.config")


def test_validator_rules_for_the_new_fields():
    base = MODEL.replace("HISTORY", ENCODERS["time_decay"][0])
    bad = problems(base.replace("ENCODER", 'time_decay_pooling { tau_seconds: 0 timestamp_feature: "hist_tz" '
                                           'sample_time_feature: "hist" }'))
    text = "\n".join(bad)
    assert "tau_seconds: got 0, expected > 0" in text
    assert "timestamp_feature: unknown feature 'hist_tz' (did you mean 'hist_ts'?)" in text
    assert "sample_time_feature: feature 'hist' is a sequence_id_feature, expected a raw_feature with value_dim 1" in text
    assert "raw_feature 'now' is not read by the group's sequence_encoder" in text
    bad = problems(MODEL.replace("HISTORY", '"hist"').replace(
        "ENCODER", 'self_attention { num_heads: 3 dropout: 1.0 pooling: "first" num_layers: 0 }'))
    text = "\n".join(bad)
    for expected in ("num_heads: got 3 for a group width of 8", "dropout: got 1, expected in [0, 1)",
                     "pooling: unknown pooling 'first'", "num_layers: got 0, expected >= 1"):
        assert expected in text
    bad = problems(MODEL.replace("HISTORY", '"hist"').replace("ENCODER", "pooling_encoder {}")
                   .replace('output_dim: 4 activation: "tanh"', 'activation: "relux"')
                   .replace("word_unigrams: true", "letter_trigrams: false")
                   .replace('feature_names: "user_id" }', 'feature_names: ["user_id", "hist_ts"] }'))
    text = "\n".join(bad)
    for expected in ("dense_projection.output_dim: got 0, expected >= 1", "unknown activation 'relux'",
                     "no n-grams enabled", "sequence_raw_feature 'hist_ts' in a DEEP group"):
        assert expected in text


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_model_with_each_encoder_exports_and_serves_the_same_embeddings(encoder, tmp_path):
    """Both encoders export (time decay through its numeric timestamp sequence) and the
    exported user tower, fed raw rows, gives the model's user embeddings."""
    from recframe.recipes.export import export_towers
    from recframe.pipeline import Pipeline
    from recframe.serving import load_tower

    history, text = ENCODERS[encoder]
    config_path = tmp_path / "m.config"
    config_path.write_text(MODEL.replace("HISTORY", history).replace("ENCODER", text))
    pipeline_ = Pipeline.from_file(str(config_path))
    torch.manual_seed(0)
    model = pipeline_.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    dirs = export_towers(pipeline_, model, tmp_path / "export", compile_cpu=False)
    table = model_data()
    with torch.no_grad():
        expected = model.user_embedding(BatchParser(pipeline_.user_features)(table)).numpy()
    user = load_tower(dirs["user"])
    np.testing.assert_allclose(user.embed(table), expected, atol=1e-5)
    # Served one row at a time (another batch size than the export's) gives the same rows.
    np.testing.assert_allclose(user.embed(table.slice(5, 1)), expected[5:6], atol=1e-5)
    if encoder == "time_decay":
        spec = {t["name"]: t for t in user.meta["tensor_inputs"]}
        assert spec["hist_ts.values"] == {"name": "hist_ts.values", "dtype": "float32", "shape": ["B", "L"]}
        # The timestamps matter: spreading the history over more time changes the served
        # embedding (a uniform shift would not: normalized weights are a softmax of -age / tau).
        spread = pa.array([[1000.0 - 10 * (1000.0 - t) for t in row] for row in table.column("hist_ts").to_pylist()])
        older = table.set_column(table.column_names.index("hist_ts"), "hist_ts", spread)
        assert np.abs(user.embed(older) - expected).max() > 1e-3
