"""recframe prepare / init, the recframe command, warm start and the test analysis (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch

from recframe.data.prepare import PrepareError, SplitSpec, prepare_interactions, split_interactions

# u1: 4 interactions, two at the same time (row order decides); u2: 3; u3: 2 (cold).
LOG = pa.table({
    "who": ["u1", "u1", "u2", "u1", "u2", "u3", "u1", "u2", "u3"],
    "what": ["a", "b", "c", "c", "a", "b", "d", "d", "a"],
    "when": ["2024-01-03", "2024-01-01T00:00:00Z", "2024-01-01", "2024-01-03", "2024-01-05",
             "2024-01-01", "2024-01-04T12:00:00+01:00", "2024-01-09", "2024-01-02"],
    "rating": [5, 4, 3, 2, 1, 5, 4, 3, 2],
})
DAY = 86400
JAN1 = 1704067200  # 2024-01-01T00:00:00Z


def spec(**kw) -> SplitSpec:
    return SplitSpec(user_col="who", item_col="what", time_col="when", **kw)


def rows(table: pa.Table, *columns: str) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns)))


def test_leave_last_out_histories_times_and_seen_items():
    out = split_interactions(LOG, spec(max_history=2))
    # u1 by time: b (01), a (03, row 0), c (03, row 3), d (04 11:00 UTC); u3 is cold: train only.
    assert rows(out["train"], "who", "what", "hist_whats") == [
        ("u1", "b", []), ("u1", "a", ["b"]), ("u2", "c", []), ("u3", "b", []), ("u3", "a", ["b"])]
    assert rows(out["valid"], "who", "what", "hist_whats", "seen_items") == [
        ("u1", "c", ["b", "a"], ["a", "b"]), ("u2", "a", ["c"], ["c"])]
    assert rows(out["test"], "who", "what", "hist_whats", "seen_items") == [
        ("u1", "d", ["a", "c"], ["a", "b", "c"]),  # history truncated to the last 2, seen items not
        ("u2", "d", ["c", "a"], ["a", "c"])]
    assert out["test"].column("hist_whens").to_pylist()[0] == [JAN1 + 2 * DAY, JAN1 + 2 * DAY]
    # Seconds from the previous interaction (untruncated: the history's last item), -1 for none;
    # u1's a and c share a time (0), d is 2024-01-04T11:00Z.
    assert rows(out["train"], "who", "what", "seconds_since_last") == [
        ("u1", "b", -1), ("u1", "a", 2 * DAY), ("u2", "c", -1), ("u3", "b", -1), ("u3", "a", DAY)]
    assert out["valid"].column("seconds_since_last").to_pylist() == [0, 4 * DAY]
    assert out["test"].column("seconds_since_last").to_pylist() == [DAY + 11 * 3600, 4 * DAY]
    assert out["test"].column("rating").to_pylist() == [4, 3]  # the interaction's own columns ride along
    assert out["items"].column("what").to_pylist() == ["a", "b", "c", "d"]
    assert out["info"]["cold_users"] == 1 and out["info"]["num_users"] == 3
    assert out["info"]["cold_items"] == 1  # d: only ever a validation / test target


def test_repeats_time_split_and_side_tables():
    log = pa.table({"who": [1, 1, 1, 2, 2, 2], "what": [7, 7, 8, 7, 9, 9],
                    "when": pa.array([1.5, 2.0, 3.0, 1.0, 4.0, 5.0])})
    kept = split_interactions(log, SplitSpec("who", "what", "when", repeats="first"))
    assert kept["info"]["num_rows_after_repeats"] == 4  # (1, 7) and (2, 9) once each
    last = split_interactions(log, SplitSpec("who", "what", "when", repeats="last", min_interactions=3,
                                             split="time", valid_start=3, test_start=5))
    # repeats=last keeps (1, 7) at 2.0 and (2, 9) at 5.0; then by time: train < 3 <= valid < 5 <= test.
    assert rows(last["train"], "who", "what", "when") == [(1, 7, 2.0), (2, 7, 1.0)]
    assert rows(last["valid"], "who", "what", "hist_whats") == [(1, 8, [7])]
    assert rows(last["test"], "who", "what", "hist_whats", "seen_items") == [(2, 9, [7], [7])]
    users = pa.table({"who": [2, 1, 3], "country": ["fr", "de", "it"]})
    items = pa.table({"what": [9, 8, 7, 6], "color": ["r", "g", "b", "k"]})
    joined = split_interactions(log, SplitSpec("who", "what", "when"), users, items)
    assert rows(joined["train"], "who", "what", "country", "color")[0] == (1, 7, "de", "b")
    assert joined["items"].column("what").to_pylist() == [9, 8, 7]  # the table's order, interacted only
    assert joined["users"].column("who").to_pylist() == [2, 1]
    every = split_interactions(log, SplitSpec("who", "what", "when", catalogue="all"), users, items)
    assert every["items"].num_rows == 4
    # Without an item table, item_features come from each item's latest interaction.
    log2 = log.append_column("shade", pa.array(["x", "y", "z", "w", "v", "u"]))
    own = split_interactions(log2, SplitSpec("who", "what", "when", item_features=("shade",)))
    assert rows(own["items"], "what", "shade") == [(7, "y"), (8, "z"), (9, "u")]
    # Fractions: about 1/3 of the rows to test (the latest), 1/3 to validation.
    by_fraction = split_interactions(log, SplitSpec("who", "what", "when", split="time", valid_fraction=0.3,
                                                    test_fraction=0.3))
    assert [t.num_rows for t in (by_fraction["train"], by_fraction["valid"], by_fraction["test"])] == [2, 2, 2]


def test_history_item_features_follow_the_history():
    items = pa.table({"what": ["a", "b", "c", "d"], "size": [1, 2, 3, 4],
                      "tags": [["x", "y"], [], ["z"], ["y", "x"]]})
    out = split_interactions(LOG, spec(max_history=2, history_item_features=("size", "tags")), items=items)
    # u1 by time: b, a, c, d -> the test row's history [a, c], its sizes [1, 3] and tags ["x|y", "z"]
    assert rows(out["test"], "who", "hist_whats", "hist_size", "hist_tags") == [
        ("u1", ["a", "c"], [1, 3], ["x|y", "z"]), ("u2", ["c", "a"], [3, 1], ["z", "x|y"])]
    assert rows(out["train"], "hist_whats", "hist_tags")[:2] == [([], []), (["b"], [""])]
    # without an item table, from --item_features: the value of each history interaction
    log = LOG.append_column("shade", pa.array(list("pqrstuvwx")))
    own = split_interactions(log, spec(item_features=("shade",), history_item_features=("shade",)))
    assert rows(own["valid"], "who", "hist_whats", "hist_shade") == [("u1", ["b", "a"], ["q", "p"]),
                                                                      ("u2", ["c"], ["r"])]
    with pytest.raises(PrepareError, match=r"--history_item_features: \['rating'\] not item side column\(s\); "
                                           r"expected columns of --items: \['size', 'tags'\]"):
        split_interactions(LOG, spec(history_item_features=("rating",)), items=items)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop_columns(["when"]), r"--interactions: no column 'when' \(it has \['who', 'what', 'rating'\]\)"),
    (lambda t: t.set_column(0, "who", pa.array(["u1", None] + ["u2"] * 7)),
     r"--interactions column 'who': 1 null user id\(s\), the first in row 1"),
    (lambda t: t.set_column(2, "when", pa.array(["2024-01-01", "yesterday"] + ["2024-01-02"] * 7)),
     r"--interactions column 'when': row 1 holds 'yesterday', which is not a time"),
    (lambda t: t.slice(0, 0), r"--interactions: no rows"),
    (lambda t: t.append_column("seen_items", pa.array([[]] * 9, pa.list_(pa.string()))),
     r"are the names of the columns prepare adds"),
])
def test_bad_input_is_named(change, message):
    with pytest.raises(PrepareError, match=message):
        split_interactions(change(LOG), spec())


def test_side_table_problems_and_options():
    with pytest.raises(PrepareError, match=r"--users: 1 'who' value\(s\) of --interactions are not there: \['u3'\]"):
        split_interactions(LOG, spec(), users=pa.table({"who": ["u1", "u2"], "age": [1, 2]}))
    with pytest.raises(PrepareError, match=r"--items: 'what' 'a' is listed more than once"):
        split_interactions(LOG, spec(), items=pa.table({"what": ["a", "a", "b", "c", "d"]}))
    with pytest.raises(PrepareError, match=r"column\(s\) \['rating'\] are in --interactions too"):
        split_interactions(LOG, spec(), items=pa.table({"what": ["a", "b", "c", "d"], "rating": [1, 2, 3, 4]}))
    with pytest.raises(PrepareError, match=r"--min_interactions: got 2, expected >= 3"):
        spec(min_interactions=2)
    with pytest.raises(PrepareError, match=r"--valid_start / --test_start need --split time"):
        spec(valid_start=1, test_start=2)
    with pytest.raises(PrepareError, match=r"leaves no validation rows"):
        split_interactions(LOG, spec(split="time", valid_start=JAN1 + 8 * DAY - 1, test_start=JAN1 + 8 * DAY))


def test_prepare_writes_everything_or_nothing(tmp_path):
    pa_csv.write_csv(LOG, tmp_path / "log.csv")
    out = tmp_path / "out"
    prepared = prepare_interactions(str(tmp_path / "log.csv"), str(out), spec())
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "items.parquet", "test.parquet",
                                                     "train.parquet", "valid.parquet"]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["row_counts"] == {"train": 5, "valid": 2, "test": 2, "items": 4} == prepared.manifest["row_counts"]
    assert manifest["columns"]["history"] == "hist_whats" and manifest["columns"]["item_features"] == []
    # A non-empty --out is refused; a failing run leaves the old folder as it was.
    with pytest.raises(PrepareError, match="is not empty: pass --overwrite"):
        prepare_interactions(str(tmp_path / "log.csv"), str(out), spec())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    pa_csv.write_csv(LOG.drop_columns(["what"]), tmp_path / "bad.csv")
    with pytest.raises(PrepareError, match="no column 'what'"):
        prepare_interactions(str(tmp_path / "bad.csv"), str(out), spec(), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def _shop(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 600
    log = pa.table({"buyer": rng.integers(1000, 1040, n), "sku": [f"s{i}" for i in rng.integers(0, 30, n)],
                    "ts": pa.array(rng.integers(0, 10**6, n)).cast(pa.timestamp("s")), "qty": rng.integers(1, 4, n)})
    pq.write_table(log, tmp_path / "log.parquet")
    pq.write_table(pa.table({"sku": [f"s{i}" for i in range(30)], "price": rng.uniform(1, 50, 30),
                             "tags": [[f"t{i % 3}", f"t{i % 5}"] for i in range(30)]}), tmp_path / "items.parquet")
    pq.write_table(pa.table({"buyer": np.arange(1000, 1040), "city": [f"c{i % 4}" for i in range(40)],
                             "flag": [True, False] * 20}), tmp_path / "users.parquet")
    from recframe.cli.main import main

    assert main(["prepare", "--interactions", str(tmp_path / "log.parquet"), "--users",
                 str(tmp_path / "users.parquet"), "--items", str(tmp_path / "items.parquet"), "--user_col", "buyer",
                 "--item_col", "sku", "--time_col", "ts", "--history_item_features", "price",
                 "--out", str(tmp_path / "data")]) == 0
    return tmp_path / "data"


def test_init_writes_a_config_that_validates_and_says_why(tmp_path, capsys):
    from recframe.cli.main import main
    from recframe.config.loader import load_pipeline_config

    data = _shop(tmp_path)
    out = tmp_path / "shop.config"
    assert main(["init", "--data_dir", str(data), "--out", str(out)]) == 0
    assert "(it validates)" in capsys.readouterr().out
    text = out.read_text()
    config = load_pipeline_config(str(out))
    features = {getattr(f, f.WhichOneof("feature")).feature_name: f for f in config.feature_configs}
    # buyer: 40 integers in 1000..1039 fill less than a quarter of 0..1039 -> a vocabulary (most frequent
    # first); sku: strings -> a vocabulary.
    assert features["buyer"].id_feature.vocab_file == "shop.buyer.vocab"
    buyers = np.concatenate([pq.read_table(data / f"{split}.parquet").column("buyer").to_numpy()
                             for split in ("train", "valid", "test")])
    vocab = (tmp_path / "shop.buyer.vocab").read_text().split()
    assert sorted(map(int, vocab)) == list(range(1000, 1040))
    counts = {b: int((buyers == b).sum()) for b in range(1000, 1040)}
    assert [counts[int(v)] for v in vocab] == sorted(counts.values(), reverse=True)
    sku = features["sku"].id_feature
    history = features["hist_skus"].sequence_id_feature
    assert sku.embedding_name == history.embedding_name == "item_emb" and history.vocab_file == sku.vocab_file
    assert list(features["city"].id_feature.vocab_list) == ["c0", "c1", "c2", "c3"]
    from recframe.protos import feature_pb2

    assert features["tags"].id_feature.pooling == feature_pb2.MEAN
    assert list(features["tags"].id_feature.vocab_list) == ["t0", "t1", "t2", "t3", "t4"]
    assert len(features["price"].raw_feature.boundaries) == 9
    assert "flag" not in features and "qty" not in features
    assert "# Not used: qty (interaction columns" in text and "# price: numbers from" in text
    assert "# Not used: hist_price (each hist_skus item's side columns, position by position;" in text
    assert "# Not used: seconds_since_last (seconds from the user's previous interaction" in text
    groups = {g.group_name: list(g.feature_names) for g in config.model_config.feature_groups}
    assert groups == {"user": ["buyer", "city", "hist_skus"], "item": ["sku", "price", "tags"]}
    assert config.data_config.exclude_negatives_field == "hist_skus"
    assert config.eval_config.exclude_items_field == "seen_items" and list(config.eval_config.top_k) == [10]
    assert main(["validate", "--pipeline_config", str(out), "--require", "train,eval,item"]) == 0
    assert main(["init", "--data_dir", str(data), "--out", str(out)]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err


def test_the_recframe_command(capsys):
    from recframe.cli.main import main

    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("recframe 0.")
    assert main(["trian"]) == 2
    assert "unknown command 'trian' (did you mean 'train'?)" in capsys.readouterr().err
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("prepare", "init", "validate", "train", "evaluate", "feature-importance", "export", "predict", "retrieve",
                 "convert-tzrec"):
        assert f"  {name}" in listed
    # Every command's --help answers without importing torch.
    code = ("import sys\nfrom recframe.cli.main import main\nfor c in sys.argv[1:]:\n    try:\n        main([c, '--help'])\n"
            "    except SystemExit:\n        pass\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, "train", "evaluate", "export", "predict", "retrieve",
                           "prepare", "init", "validate", "feature-importance"], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "False"
    done = subprocess.run([sys.executable, "-m", "recframe", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("recframe ")
    done = subprocess.run([sys.executable, "-c", "import recframe, sys; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"  # import recframe is light


def test_train_flags_of_torcheasyrec():
    from recframe.cli.train import build_parser, overrides

    args = build_parser().parse_args(["--pipeline_config_path", "x.config", "--train_input_path", "a.parquet",
                                      "--eval_input_path", "b.parquet", "--fine_tune_checkpoint", "runs/old",
                                      "--edit_config_json", '{"train_config.num_epochs": 2}'])
    assert args.pipeline_config == "x.config"
    assert json.loads(overrides(args)) == {"train_config.num_epochs": 2, "train_input_path": "a.parquet",
                                           "eval_input_path": "b.parquet",
                                           "train_config.fine_tune_checkpoint": "runs/old"}


def test_warm_start_by_name_with_a_report(tmp_path):
    from recframe.pipeline import Pipeline
    from recframe.training.checkpoint import CheckpointManager, resolve_warm_start, warm_start
    from synthetic import write_config

    config, _ = write_config(tmp_path)
    torch.manual_seed(0)
    old = Pipeline.from_file(config).build_model()
    # The new run: 50 more users (a bigger user table), one more feature, the same rest.
    new_pipeline = Pipeline.from_file(config, json.dumps({"feature_configs[0].id_feature.num_buckets": 250}))
    torch.manual_seed(1)
    new = new_pipeline.build_model()
    report = warm_start(new, old.state_dict(), "old.pt")
    user_key = "user_tower.embedding_group.tables.user_id.weight"
    assert report.partial == [(user_key, "rows 0..199 of 250 from a table of 200 rows")]
    state = new.state_dict()
    assert torch.equal(state[user_key][:200], old.state_dict()[user_key])
    assert not torch.equal(state[user_key][200:], torch.zeros(50, 16))  # the new rows keep fresh values
    for key in report.loaded:
        assert torch.equal(state[key], old.state_dict()[key])
    assert len(report.loaded) == len(state) - 1 and report.skipped == [] and report.unused == []
    assert report.lines()[0] == f"warm start from old.pt: {len(state) - 1} parameter(s) loaded, 1 partly, 0 not " \
                                "(fresh values)"
    # A model_dir resolves to its latest checkpoint; anything else is named.
    manager = CheckpointManager(tmp_path / "run", keep_checkpoint_max=2)
    manager.save(7, {"model": old.state_dict()})
    assert resolve_warm_start(str(tmp_path / "run")).endswith("ckpt-00000007.pt")
    with pytest.raises(FileNotFoundError, match="fine_tune_checkpoint: .* is not a checkpoint file"):
        resolve_warm_start(str(tmp_path / "nowhere"))


def test_recall_by_k_and_popularity_buckets():
    from recframe.metrics.analysis import popularity_buckets, recall_by_k

    ranks = np.array([1, 3, 0, 12, 2])
    assert recall_by_k(ranks, 3).tolist() == pytest.approx([0.2, 0.4, 0.6])
    buckets = popularity_buckets(np.array([1, 1, 5, 50, 9]), ranks, k=3, buckets=2)
    # Sorted by count: [1 (rank 1), 1 (rank 3), 5 (rank 0)] and [9 (rank 2), 50 (rank 12)].
    assert buckets == [{"min_count": 1, "max_count": 5, "queries": 3, "recall": pytest.approx(2 / 3)},
                       {"min_count": 9, "max_count": 50, "queries": 2, "recall": 0.5}]
