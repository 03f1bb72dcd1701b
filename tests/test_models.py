"""Models: DSSM / DSSMV2 table sharing, towers, variational dropout, and that they learn."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import build, parse_batch
from recframe.models import DSSM, DSSMV2, MatchModel, create_model
from recframe.registry import MODELS

# --- table sharing -----------------------------------------------------------------------------

SHARED = """
data_config { item_id_field: "item_id" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 8 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 12 embedding_dim: 4 embedding_name: "item" } }
feature_configs { sequence_id_feature { feature_name: "hist" num_buckets: 12 embedding_dim: 4
                                        embedding_name: "item" sequence_length: 3 } }
model_config {
  feature_groups { group_name: "user" feature_names: ["user_id", "hist"] }
  feature_groups { group_name: "item" feature_names: "item_id" }
  MODEL { user_tower { input: "user" mlp { hidden_units: [6] } }
          item_tower { input: "item" mlp { hidden_units: [6] } } }
}
"""

SHARED_TABLE = pa.table({"user_id": [0, 1, 2], "item_id": [3, 4, 5], "hist": [[3, 4], [5], [3, 4, 5]]})


def shared_model(kind: str):
    torch.manual_seed(0)
    cfg, feats, model = build(SHARED.replace("MODEL", kind))
    return model, parse_batch(cfg, feats, SHARED_TABLE)


def test_dssm_v2_shared_table_is_one_parameter():
    model, _ = shared_model("dssm_v2")
    assert type(model) is DSSMV2
    assert model.user_tower.embedding_group is model.item_tower.embedding_group
    item_params = [n for n, _ in model.named_parameters() if ".tables.item." in n]
    item_state = [n for n in model.state_dict() if ".tables.item." in n]
    assert item_params == item_state == ["user_tower.embedding_group.tables.item.weight"]
    tables = [p for n, p in model.named_parameters() if ".tables." in n]
    assert sorted(p.shape[0] for p in tables) == [8, 12]  # user table + the one item table
    # a state_dict round trip restores identical embeddings
    other, batch = shared_model("dssm_v2")
    torch.manual_seed(1)
    fresh = build(SHARED.replace("MODEL", "dssm_v2"))[2]
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    assert torch.equal(fresh.item_embedding(batch), model.item_embedding(batch))
    assert torch.equal(fresh.user_embedding(batch), model.user_embedding(batch))
    assert not fresh.item_tower.embedding_group.training  # eval() reaches the shared group


def test_dssm_has_one_item_table_per_tower():
    model, _ = shared_model("dssm")
    assert type(model) is DSSM
    assert model.user_tower.embedding_group is not model.item_tower.embedding_group
    item_params = [n for n, _ in model.named_parameters() if ".tables.item." in n]
    assert item_params == ["user_tower.embedding_group.tables.item.weight",
                           "item_tower.embedding_group.tables.item.weight"]
    assert [n for n in model.state_dict() if ".tables.item." in n] == item_params
    # the item tower has no user table
    assert "item_tower.embedding_group.tables.user_id.weight" not in model.state_dict()


@pytest.mark.parametrize("kind, shared", [("dssm_v2", True), ("dssm", False)])
def test_user_tower_gradient_step_moves_item_tower_only_when_shared(kind, shared):
    model, batch = shared_model(kind)
    before = model.item_embedding(batch).detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.user_embedding(batch).sum().backward()  # through the user tower alone
    assert model.item_tower.mlp.layers[0][0].weight.grad is None
    opt.step()
    after = model.item_embedding(batch).detach()
    if shared:
        assert not torch.allclose(after, before)
        # exactly the item rows seen in the histories moved (3, 4, 5)
        moved = (model.user_tower.embedding_group.tables["item"].weight.grad.abs().sum(1) > 0).nonzero().flatten()
        assert moved.tolist() == [3, 4, 5]
    else:
        assert torch.equal(after, before)


# --- towers, similarity ------------------------------------------------------------------------

TWO_TOWER = """
data_config { item_id_field: "item_id" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 8 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 8 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "user" feature_names: "user_id" }
  feature_groups { group_name: "item" feature_names: "item_id" }
  dssm { user_tower { input: "user" mlp { hidden_units: [6] } } item_tower { input: "item" TOWER }
         EXTRA }
}
"""


def test_cosine_embeddings_are_unit_norm_and_projection_sets_output_dim():
    torch.manual_seed(0)
    cfg, feats, model = build(TWO_TOWER.replace("TOWER", "").replace("EXTRA", "output_dim: 3 similarity: COSINE"))
    batch = parse_batch(cfg, feats, pa.table({"user_id": [0, 1], "item_id": [2, 3]}))
    out = model(batch)
    assert out["user_emb"].shape == (2, 3) and out["item_emb"].shape == (2, 3)
    assert torch.allclose(out["user_emb"].norm(dim=1), torch.ones(2))
    assert torch.allclose(out["item_emb"].norm(dim=1), torch.ones(2))
    # item tower without MLP: projection of the raw embedding
    raw = model.item_tower.embedding_group.tables["item_id"].weight[[2, 3]]
    expected = torch.nn.functional.normalize(model.item_tower.projection(raw), dim=1)
    assert torch.allclose(out["item_emb"], expected)
    assert out["aux_loss"].item() == 0.0
    assert torch.allclose(model.score(out, batch).pointwise_logits(), (out["user_emb"] * out["item_emb"]).sum(1))


def test_tower_width_mismatch_is_an_error():
    with pytest.raises(ValueError, match="user tower outputs 6 dims but item tower 4"):
        build(TWO_TOWER.replace("TOWER", "").replace("EXTRA", ""))


def test_model_class_picks_a_registered_subclass():
    @MODELS.register("MyDSSMForTest", override=True)
    class MyDSSM(DSSM):
        pass

    try:
        cfg, feats, plain = build(TWO_TOWER.replace("TOWER", "mlp { hidden_units: [6] }").replace("EXTRA", ""))
        assert type(plain) is DSSM
        cfg.model_config.model_class = "MyDSSMForTest"
        model = create_model(cfg.model_config, feats)
        assert type(model) is MyDSSM and isinstance(model, MatchModel)
    finally:
        MODELS._entries.pop("MyDSSMForTest")  # registries are process-wide: leave no test class behind


# --- variational dropout in a model ------------------------------------------------------------

VD_MODEL = """
feature_configs { id_feature { feature_name: "user_id" num_buckets: 8 embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "age" } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 8 embedding_dim: 5 } }
model_config {
  feature_groups { group_name: "user" feature_names: ["user_id", "age"] }
  feature_groups { group_name: "item" feature_names: "item_id" }
  dssm { user_tower { input: "user" } item_tower { input: "item" } }
  variational_dropout { regularization_lambda: 0.4 initial_drop_probability: 0.25 }
}
"""


def test_variational_dropout_in_model_penalty_and_eval_scaling():
    torch.manual_seed(0)
    cfg, feats, model = build(VD_MODEL)
    assert list(model.user_tower.dropouts) == ["user"] and not model.item_tower.dropouts  # single-feature groups get none
    batch = parse_batch(cfg, feats, pa.table({"user_id": [1, 2, 3, 4], "age": [0.5, 1.0, 2.0, 3.0],
                                              "item_id": [1, 2, 3, 4]}))
    model.train()
    out = model(batch)
    expected_penalty = 0.4 / 4 * (0.75 + 0.75)
    assert out["aux_loss"].item() == pytest.approx(expected_penalty)
    losses = model.compute_loss(out, batch)
    assert losses["variational_dropout"].item() == pytest.approx(expected_penalty)
    assert losses["total"].item() == pytest.approx(losses["softmax_cross_entropy"].item() + expected_penalty, rel=1e-6)
    # eval: the user input is the concatenation scaled by 1 - p = 0.75 per feature
    model.eval()
    raw = torch.cat([model.user_tower.embedding_group.tables["user_id"].weight[[1, 2, 3, 4]],
                     torch.tensor([[0.5], [1.0], [2.0], [3.0]])], dim=1)
    assert torch.allclose(model.user_embedding(batch), 0.75 * raw)
    assert model.feature_ranking() == {"user": [("user_id", pytest.approx(0.75)), ("age", pytest.approx(0.75))]}


def test_embedding_wise_variational_dropout_in_model():
    torch.manual_seed(0)
    cfg, feats, model = build(VD_MODEL.replace("initial_drop_probability: 0.25", "initial_drop_probability: 0.25 "
                                                                                 "embedding_wise: true"))
    dropout = model.user_tower.dropouts["user"]
    assert dropout.drop_logit.shape == (5,)  # user_id 4 + age 1 dimensions
    p = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    with torch.no_grad():
        dropout.drop_logit.copy_(torch.log(p / (1 - p)))
    batch = parse_batch(cfg, feats, pa.table({"user_id": [1, 2, 3, 4], "age": [0.5, 1.0, 2.0, 3.0],
                                              "item_id": [1, 2, 3, 4]}))
    model.train()
    assert model(batch)["aux_loss"].item() == pytest.approx(0.4 / 4 * (0.9 + 0.8 + 0.7 + 0.6 + 0.5))
    model.eval()
    raw = torch.cat([model.user_tower.embedding_group.tables["user_id"].weight[[1, 2, 3, 4]],
                     torch.tensor([[0.5], [1.0], [2.0], [3.0]])], dim=1)
    assert torch.allclose(model.user_embedding(batch), raw * torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert model.feature_importance() == {"user": {"user_id": pytest.approx(0.75), "age": pytest.approx(0.5)}}
    assert model.feature_ranking() == {"user": [("user_id", pytest.approx(0.75)), ("age", pytest.approx(0.5))]}


# --- learning on synthetic data ----------------------------------------------------------------

N = 64
PERM = np.random.default_rng(0).permutation(N)

LISTWISE = """
data_config { item_id_field: "item_id" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 64 embedding_dim: 16 } }
feature_configs { id_feature { feature_name: "item_id" hash_bucket_size: 1009 embedding_dim: 16 embedding_name: "item" } }
feature_configs { sequence_id_feature { feature_name: "hist" hash_bucket_size: 1009 embedding_dim: 16
                                        embedding_name: "item" sequence_length: 4 } }
model_config {
  feature_groups { group_name: "user" feature_names: USER_FEATURES }
  feature_groups { group_name: "item" feature_names: "item_id" }
  MODEL { user_tower { input: "user" mlp { hidden_units: [32] activation: "tanh" } }
          item_tower { input: "item" mlp { hidden_units: [32] activation: "tanh" } }
          output_dim: 16 similarity: COSINE temperature: 0.1 }
  metrics { in_batch_recall_at_k { top_k: 1 } }
}
"""


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster on a busy machine and makes the runs reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(model, batch, steps=50, lr=0.01):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        model.train()
        out = model(batch)
        loss = model.compute_loss(out, batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def listwise_data():
    users = np.arange(N)
    rng = np.random.default_rng(1)
    return pa.table({
        "user_id": users,
        "item_id": [f"movie_{PERM[u]}" for u in users],  # the item is a function of the user
        "hist": [[f"movie_{i}" for i in rng.integers(0, N, size=int(rng.integers(0, 6)))] for _ in users],
    })


@pytest.mark.parametrize("kind, user_features", [("dssm", '"user_id"'), ("dssm_v2", '["user_id", "hist"]')])
def test_listwise_model_learns_item_of_user(kind, user_features):
    torch.manual_seed(0)
    cfg, feats, model = build(LISTWISE.replace("MODEL", kind).replace("USER_FEATURES", user_features))
    batch = parse_batch(cfg, feats, listwise_data())
    assert len(set(batch.sparse["item_id"].values.tolist())) == N  # no hash collision among the items
    assert len(set(batch.item_key.tolist())) == N
    history = train(model, batch, lr=0.05)
    assert history[0] == pytest.approx(math.log(N), rel=0.1)  # near-uniform at the start
    assert history[-1] < 0.5 * history[0]
    model.eval()
    with torch.no_grad():
        model.update_metrics(model(batch), batch)
    assert model.compute_metrics()["in_batch_recall@1"] > 0.9


POINTWISE = """
data_config { label_fields: "label" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 16 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 16 embedding_dim: 8 } }
model_config {
  feature_groups { group_name: "user" feature_names: "user_id" }
  feature_groups { group_name: "item" feature_names: "item_id" }
  dssm { user_tower { input: "user" mlp { hidden_units: [16] activation: "tanh" } }
         item_tower { input: "item" mlp { hidden_units: [16] activation: "tanh" } } output_dim: 8 }
  losses { binary_cross_entropy {} }
  metrics { auc {} }
}
"""


def test_pointwise_bce_model_learns_labels_and_auc_rises():
    torch.manual_seed(0)
    users, items = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    users, items = users.ravel(), items.ravel()
    labels = (users % 4 == items % 4).astype(np.float32)  # learnable by a dot product
    cfg, feats, model = build(POINTWISE)
    batch = parse_batch(cfg, feats, pa.table({"user_id": users, "item_id": items, "label": labels}))

    def auc():
        model.eval()
        with torch.no_grad():
            model.update_metrics(model(batch), batch)
        return model.compute_metrics()["auc"]

    initial_auc = auc()
    history = train(model, batch, lr=0.1)
    assert set(model.compute_loss(model(batch), batch)) == {"binary_cross_entropy", "total"}
    assert history[0] == pytest.approx(math.log(2), rel=0.1)  # logits ~0 at the start
    assert history[-1] < 0.5 * history[0]
    final_auc = auc()
    assert final_auc > 0.8 and final_auc > initial_auc + 0.2


@pytest.mark.parametrize("kind", ["dssm", "dssm_v2"])
def test_sparse_embedding_gradients_train_exactly_like_dense_ones(kind):
    """Sparse tables (gradients for the rows looked up only) and dense ones: the same gradients,
    so with SGD the same parameters after every step; only the rows looked up move."""
    from conftest import build, parse_batch
    from recframe.features import create_features
    from recframe.models import create_model
    from recframe.training.optim import split_sparse_dense

    text = LISTWISE.replace("MODEL", kind).replace("USER_FEATURES", '["user_id", "hist"]')
    cfg, feats, _ = build(text)
    batch = parse_batch(cfg, feats, listwise_data())
    models = []
    for sparse in (False, True):
        torch.manual_seed(0)
        models.append(create_model(cfg.model_config, create_features(cfg.feature_configs), sparse_embeddings=sparse))
    dense_model, sparse_model = models
    start = {n: p.detach().clone() for n, p in sparse_model.named_parameters()}
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in models]
    for _ in range(3):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model.compute_loss(model(batch), batch)["total"].backward()
            opt.step()
    tables, _ = split_sparse_dense(sparse_model)
    assert tables and all(p.grad.is_sparse for p in tables)
    for (name, a), (_, b) in zip(dense_model.named_parameters(), sparse_model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    item_table = sparse_model.item_tower.embedding_group.tables["item"].weight
    moved = (item_table != start[[n for n in start if n.endswith("tables.item.weight")][-1]]).any(dim=1)
    looked_up = torch.unique(torch.cat([batch.sparse["item_id"].values, batch.sequence["hist"].ids.flatten()]))
    assert set(moved.nonzero().flatten().tolist()) <= set(looked_up.tolist()) and 0 < moved.sum() < 1009
