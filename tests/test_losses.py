"""Losses and training metrics against hand computations (math.exp/log, not torch's own)."""

import math

import numpy as np
import pytest
import torch

from conftest import build
from recframe.batch import Batch, SparseIds
from recframe.features import item_keys
from recframe.losses import binary_cross_entropy, softmax_cross_entropy
from recframe.metrics.training import InBatchRecallAtK, create_metric
from recframe.negatives import MASKED_LOGIT, ItemFrequency, assemble_candidates
from recframe.negatives.exclusion import excluded_row_candidates, excluded_shared_candidates
from recframe.protos import metric_pb2

SIM = [[0.9, 0.2, -0.3],
       [0.1, 0.4, 0.5],
       [-0.2, 0.7, 0.3]]
TEMPERATURE = 0.5


def hand_row_losses(sim, temperature, label_smoothing=0.0, masked=()):
    """-(1-eps) log p_ii - eps * mean over unmasked j of log p_ij, by hand."""
    losses = []
    for i, row in enumerate(sim):
        cols = [j for j in range(len(row)) if (i, j) not in masked]
        z = sum(math.exp(row[j] / temperature) for j in cols)
        log_p = {j: row[j] / temperature - math.log(z) for j in cols}
        uniform = -sum(log_p.values()) / len(cols)
        losses.append((1 - label_smoothing) * -log_p[i] + label_smoothing * uniform)
    return losses


def logits_of(sim=SIM, temperature=TEMPERATURE):
    return torch.tensor(sim, dtype=torch.float32) / temperature


DIAG = torch.arange(3)


def test_softmax_loss_hand_computed_3x3_with_temperature():
    rows = hand_row_losses(SIM, TEMPERATURE)
    # spot-check row 0 fully by hand: logits 1.8, 0.4, -0.6
    assert rows[0] == pytest.approx(-1.8 + math.log(math.exp(1.8) + math.exp(0.4) + math.exp(-0.6)))
    assert softmax_cross_entropy(logits_of(), DIAG).item() == pytest.approx(sum(rows) / 3, rel=1e-6)


def test_softmax_loss_label_smoothing_spreads_over_all_unmasked_candidates():
    eps = 0.2
    rows = hand_row_losses(SIM, TEMPERATURE, label_smoothing=eps)
    assert softmax_cross_entropy(logits_of(), DIAG, label_smoothing=eps).item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    # smoothing changes the value
    assert sum(rows) / 3 != pytest.approx(sum(hand_row_losses(SIM, TEMPERATURE)) / 3, rel=1e-3)


def test_softmax_loss_sample_weights():
    weights = [0.5, 2.0, 1.5]
    rows = hand_row_losses(SIM, TEMPERATURE)
    expected = sum(w * r for w, r in zip(weights, rows)) / sum(weights)
    got = softmax_cross_entropy(logits_of(), DIAG, torch.tensor(weights))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    rows_ls = hand_row_losses(SIM, TEMPERATURE, label_smoothing=0.1)
    got_ls = softmax_cross_entropy(logits_of(), DIAG, torch.tensor(weights), label_smoothing=0.1)
    assert got_ls.item() == pytest.approx(sum(w * r for w, r in zip(weights, rows_ls)) / sum(weights), rel=1e-6)


def candidates_of(batch, sim=SIM, temperature=TEMPERATURE, in_batch_negative=True):
    """The model's candidates for user embeddings = rows of ``sim`` and one-hot item
    embeddings, so that the scores are ``sim / temperature``."""
    sim = torch.tensor(sim, dtype=torch.float32)
    items = torch.eye(sim.shape[1])
    return assemble_candidates(sim, items, batch, temperature=temperature, in_batch_negative=in_batch_negative,
                               logq_correction=False)


def test_accidental_hits_masked_off_diagonal_only():
    keys = torch.tensor([10, 20, 10])  # rows 0 and 2 hold the same item
    candidates = candidates_of(Batch(batch_size=3, item_key=keys))
    masked = candidates.logits()
    assert masked[0, 2].item() == MASKED_LOGIT and masked[2, 0].item() == MASKED_LOGIT
    keep = torch.ones(3, 3, dtype=torch.bool)
    keep[0, 2] = keep[2, 0] = False
    assert torch.allclose(masked[keep], logits_of()[keep])  # the diagonal and the rest untouched
    # the loss is the softmax over the reduced candidate set, with and without smoothing
    for eps in (0.0, 0.3):
        rows = hand_row_losses(SIM, TEMPERATURE, eps, masked={(0, 2), (2, 0)})
        got = softmax_cross_entropy(masked, candidates.positive_column, label_smoothing=eps)
        assert torch.isfinite(got)
        assert got.item() == pytest.approx(sum(rows) / 3, rel=1e-6)


def test_accidental_hits_with_separate_candidates():
    # 2 rows, their positives (keys 7, 8) then 2 shared sampled negatives (keys 7, 9)
    batch = Batch(batch_size=2, item_key=torch.tensor([7, 8, 7, 9]), num_shared=2)
    candidates = candidates_of(batch, sim=[[0.0] * 4, [0.0] * 4])
    assert candidates.positive_column.tolist() == [0, 1]
    assert candidates.masked.tolist() == [[False, False, True, False], [False, False, False, False]]
    assert (candidates.logits() == MASKED_LOGIT).tolist() == candidates.masked.tolist()


def jagged(rows):
    lengths = [len(r) for r in rows]
    return SparseIds(torch.tensor([k for r in rows for k in r], dtype=torch.long),
                     torch.tensor([0] + list(np.cumsum(lengths)), dtype=torch.long))


def test_excluded_shared_candidates_by_hand():
    # columns hold keys 7, 9, 7, 4 (key 7 twice, e.g. the positive of two rows)
    exclude = jagged([[7, 11], [], [4, 9, 4], [-3]])
    mask = excluded_shared_candidates(torch.tensor([7, 9, 7, 4]), exclude, num_rows=4)
    assert mask.tolist() == [[True, False, True, False],   # both columns of 7; 11 is no column
                             [False, False, False, False],  # nothing excluded
                             [False, True, False, True],    # 4 listed twice: marked once
                             [False, False, False, False]]  # a key absent from the columns


def test_excluded_row_candidates_by_hand():
    exclude = jagged([[5, 6], [2], []])
    mask = excluded_row_candidates(torch.tensor([[6, 1], [5, 2], [0, 0]]), exclude)
    assert mask.tolist() == [[True, False], [False, True], [False, False]]  # row 1's 5 is row 0's


def test_excluded_candidates_equal_a_brute_force_membership_test():
    gen = torch.Generator().manual_seed(3)
    rows, columns = 40, 64
    column_keys = torch.randint(-30, 30, (columns,), generator=gen) * 1_000_003  # spread-out int64 keys
    lists = [torch.randint(-30, 30, (int(n),), generator=gen).mul(1_000_003).tolist()
             for n in torch.randint(0, 12, (rows,), generator=gen)]
    exclude = jagged(lists)
    row_keys = column_keys[torch.randint(0, columns, (rows, 5), generator=gen)]
    shared = excluded_shared_candidates(column_keys, exclude, rows)
    own = excluded_row_candidates(row_keys, exclude)
    assert shared.tolist() == [[k in set(lst) for k in column_keys.tolist()] for lst in lists]
    assert own.tolist() == [[k in set(lst) for k in keys] for lst, keys in zip(lists, row_keys.tolist())]
    assert shared.any() and not shared.all()  # the draw exercises both outcomes


def test_binary_cross_entropy_hand_computed():
    logits = [2.0, -1.0, 0.5]
    labels = [1.0, 0.0, 0.0]

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    rows = [bce(x, y) for x, y in zip(logits, labels)]
    assert binary_cross_entropy(torch.tensor(logits), torch.tensor(labels)).item() == pytest.approx(sum(rows) / 3)
    w = [1.0, 3.0, 0.0]
    got = binary_cross_entropy(torch.tensor(logits), torch.tensor(labels), torch.tensor(w))
    assert got.item() == pytest.approx(sum(a * b for a, b in zip(w, rows)) / sum(w))


# --- logQ correction through the model --------------------------------------------------------

LOGQ_MODEL = """
data_config { item_id_field: "item" }
feature_configs { id_feature { feature_name: "user" num_buckets: 10 embedding_dim: 2 } }
feature_configs { id_feature { feature_name: "item" num_buckets: 10 embedding_dim: 2 } }
model_config {
  feature_groups { group_name: "u" feature_names: "user" }
  feature_groups { group_name: "i" feature_names: "item" }
  dssm { user_tower { input: "u" } item_tower { input: "i" } temperature: 0.5 logq_correction: true }
}
"""


def test_logq_corrected_logits_equal_similarity_over_temperature_minus_log_q():
    _, _, model = build(LOGQ_MODEL)
    # training rows: item 1 is popular (6 of 8), items 2 and 3 are rare (1 of 8 each)
    freq = ItemFrequency.from_item_ids(np.array([1, 1, 1, 1, 1, 1, 2, 3]))
    batch_items = np.array([1, 2, 3])
    log_q = freq.log_q(item_keys(batch_items))
    assert log_q.tolist() == pytest.approx([math.log(6 / 8), math.log(1 / 8), math.log(1 / 8)])
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    item = torch.tensor([[0.5, 0.5], [1.0, -1.0], [0.2, 0.0]])
    batch = Batch(batch_size=3, item_key=torch.from_numpy(item_keys(batch_items)), item_log_q=torch.from_numpy(log_q))
    logits = model.score({"user_emb": user, "item_emb": item}, batch).candidates.logits()
    for i in range(3):
        for j in range(3):
            sim = sum(user[i, k].item() * item[j, k].item() for k in range(2))
            assert logits[i, j].item() == pytest.approx(sim / 0.5 - math.log(freq.counts[freq.keys == batch_items[j]][0] / 8),
                                                        rel=1e-6)
    # the rare item's candidate logit is raised more than the popular one's
    boost = logits - (user @ item.T) / 0.5
    assert boost[0, 1] > boost[0, 0] and boost[0, 1].item() == pytest.approx(math.log(8))
    assert boost[0, 0].item() == pytest.approx(-math.log(6 / 8))
    # the loss is the softmax over those corrected logits
    loss = model.compute_loss({"user_emb": user, "item_emb": item, "aux_loss": torch.zeros(())}, batch)
    rows = hand_row_losses(logits.tolist(), 1.0)
    assert loss["softmax_cross_entropy"].item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    assert loss["total"].item() == pytest.approx(sum(rows) / 3, rel=1e-6)


def test_model_candidates_mask_duplicate_items_and_loss_weight():
    _, _, model = build(LOGQ_MODEL.replace("logq_correction: true }", "}\n  losses { softmax_cross_entropy { label_smoothing: 0.1 } weight: 2.0 }"))
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    item = torch.tensor([[0.5, 0.5], [1.0, -1.0], [0.2, 0.0]])
    batch = Batch(batch_size=3, item_key=torch.tensor([4, 5, 4]))
    logits = model.score({"user_emb": user, "item_emb": item}, batch).candidates.logits()
    sim = (user @ item.T).tolist()
    assert logits[0, 2].item() == MASKED_LOGIT and logits[2, 0].item() == MASKED_LOGIT
    assert logits[0, 0].item() == pytest.approx(sim[0][0] / 0.5)
    loss = model.compute_loss({"user_emb": user, "item_emb": item, "aux_loss": torch.zeros(())}, batch)
    rows = hand_row_losses(sim, 0.5, 0.1, masked={(0, 2), (2, 0)})
    assert loss["total"].item() == pytest.approx(2.0 * sum(rows) / 3, rel=1e-6)


def test_half_precision_masks_stay_finite_and_lose_to_every_real_logit():
    """-1e9 does not exist in float16 (masked_fill raised at step 1 under fp16 autocast)."""
    from recframe.losses import sampled_binary_cross_entropy
    from recframe.negatives.candidates import masked_logit

    assert masked_logit(torch.float32) == masked_logit(torch.bfloat16) == MASKED_LOGIT == -1e9
    assert masked_logit(torch.float16) == -32752.0
    _, _, model = build(LOGQ_MODEL.replace("logq_correction: true }", "}"))
    keys = torch.tensor([4, 5, 4])  # rows 0 and 2 hold the same item: (0, 2) and (2, 0) masked
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float16)
    item = torch.tensor([[0.5, 0.5], [1.0, -1.0], [0.2, 0.0]], dtype=torch.float16)
    candidates = model.score({"user_emb": user, "item_emb": item}, Batch(batch_size=3, item_key=keys)).candidates
    logits = candidates.logits()
    assert logits.dtype == torch.float16 and bool(torch.isfinite(logits).all())
    assert logits[0, 2].item() == logits[2, 0].item() == -32752.0
    real = logits[~candidates.masked]
    assert logits[candidates.masked].max() < real.min() - 30000
    # The softmax gives the masked entries exactly nothing, in half precision too.
    probs = torch.softmax(logits.float(), dim=1)
    assert probs[0, 2].item() == probs[2, 0].item() == 0.0
    sim = (user.float() @ item.float().T).tolist()
    for eps in (0.0, 0.1):
        got = softmax_cross_entropy(logits, candidates.positive_column, label_smoothing=eps)
        by_mask = softmax_cross_entropy(logits, candidates.positive_column, label_smoothing=eps,
                                        masked=candidates.masked)
        want = sum(hand_row_losses(sim, 0.5, eps, masked={(0, 2), (2, 0)})) / 3
        assert got.item() == by_mask.item() == pytest.approx(want, rel=2e-3)  # float16 scores
    bce = sampled_binary_cross_entropy(logits.float(), candidates.positive_column, masked=candidates.masked)
    assert torch.isfinite(bce)


def test_fp16_autocast_training_step_is_finite(tmp_path):
    """A whole forward and loss under float16 autocast on CPU, with masked candidates."""
    import json

    from recframe.pipeline import Pipeline
    from synthetic import write_config

    config, _ = write_config(tmp_path, dropout=0.0)
    pipeline = Pipeline.from_file(config, json.dumps({"data_config.exclude_negatives_field": "hist_item_ids"}))
    parser = pipeline.train_parser()
    batch = next(iter(pipeline.dataset(pipeline.config.train_input_path, parser.columns(), parser, shuffle=False)))
    torch.manual_seed(0)
    model = pipeline.build_model()
    with torch.autocast("cpu", dtype=torch.float16):
        outputs = model(batch)
        candidates = model.score(outputs, batch).candidates
        assert candidates.scores.dtype == torch.float16
        assert bool(candidates.masked.any())  # the histories mask some candidates
        loss = model.compute_loss(outputs, batch)["total"]
    assert torch.isfinite(loss) and 3.0 < loss.item() < 6.0  # about log(100 candidates)
    loss.backward()
    assert all(torch.isfinite(p.grad.coalesce().values() if p.grad.is_sparse else p.grad).all()
               for p in model.parameters() if p.grad is not None)


# --- training metrics --------------------------------------------------------------------------

def test_in_batch_recall_at_k_counts_ties_against_the_positive():
    metric = InBatchRecallAtK(metric_pb2.InBatchRecallAtK(top_k=1))
    logits = torch.tensor([[3.0, 1.0, 2.0],   # positive first -> hit
                           [1.0, 1.0, 0.0],   # tie with a negative -> miss
                           [5.0, 0.0, 4.0]])  # positive second -> miss @1, hit @2
    metric.update_logits(logits, DIAG)
    assert metric.compute() == pytest.approx(1 / 3)
    at2 = create_metric(metric_pb2.MetricConfig(in_batch_recall_at_k=metric_pb2.InBatchRecallAtK(top_k=2)))
    at2.update_logits(logits, DIAG)
    assert at2.name == "in_batch_recall@2" and at2.compute() == pytest.approx(1.0)  # one tie ahead < 2
    # a masked accidental hit never ranks ahead
    masked = logits.clone()
    masked[1, 0] = MASKED_LOGIT
    metric.reset()
    metric.update_logits(masked, DIAG)
    assert metric.compute() == pytest.approx(2 / 3)


def test_auc_and_accuracy_metrics():
    auc = create_metric(metric_pb2.MetricConfig(auc=metric_pb2.AUC()))
    # positives scores 2, 0.5; negatives 1, -1 -> 3 of 4 pairs ordered -> AUC 0.75
    auc.update_logits(torch.tensor([2.0, 1.0, 0.5, -1.0]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert auc.compute() == pytest.approx(0.75)
    acc = create_metric(metric_pb2.MetricConfig(accuracy=metric_pb2.Accuracy(threshold=0.5)))
    acc.update_logits(torch.tensor([2.0, 1.0, 0.5, -1.0]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert acc.compute() == pytest.approx(0.75)
