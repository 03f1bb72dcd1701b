"""recframe serve (issue 17): the gRPC top-K service over an export, on a small trained model.

Its answers equal the exact top-K of the exported towers (recframe retrieve's ranking), bad
requests get INVALID_ARGUMENT naming the column and never disturb the well-formed ones sent
with them, and a reload under load loses no request.
"""

from __future__ import annotations

import json
import threading

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recframe.metrics.retrieval import exact_top_k
from recframe.serving import load_tower
from recframe.serving.client import RetrievalClient, top_k_request
from recframe.serving.server import RequestError, ServeOptions, Server
from synthetic import write_config

USER_COLUMNS = ["user_id", "segment", "age", "hist_item_ids"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two exports of one config (two seeds, 1 epoch each) and the data paths."""
    from recframe.cli import export, train

    tmp = tmp_path_factory.mktemp("serving")
    config, paths = write_config(tmp, num_epochs=1, dropout=0.0)
    out = {}
    for seed in (1, 2):
        model_dir = tmp / f"model{seed}"
        edits = json.dumps({"train_config.seed": seed})
        assert train.main(["--pipeline_config", config, "--model_dir", str(model_dir), "--edit_config_json",
                           edits]) == 0
        assert export.main(["--pipeline_config", config, "--model_dir", str(model_dir), "--export_dir",
                            str(tmp / f"export{seed}"), "--no_compile"]) == 0
        out[seed] = str(tmp / f"export{seed}")
    return out, paths


def exact_answers(export_dir: str, paths: dict, k: int) -> tuple[list, list, list]:
    """Per test user: the exact top-k item ids of the exported towers, the user's seen items
    excluded; the user's raw features."""
    test = pq.read_table(paths["test"])
    items = pq.read_table(paths["items"])
    users = torch.from_numpy(load_tower(f"{export_dir}/user").embed(test))
    item_vectors = torch.from_numpy(load_tower(f"{export_dir}/item").embed(items))
    seen = test.column("seen_items").combine_chunks()
    offsets = torch.from_numpy(seen.offsets.to_numpy().astype(np.int64))
    exclude = (torch.from_numpy(seen.values.to_numpy().astype(np.int64)), offsets)  # item id == row here
    scores, rows = exact_top_k(users, item_vectors, k, exclude)
    ids = items.column("item_id").to_numpy()
    features = [{c: row[c] for c in USER_COLUMNS} for row in test.select(USER_COLUMNS).to_pylist()]
    return [ids[r].tolist() for r in rows.numpy()], scores.numpy(), features


@pytest.fixture
def server(exports):
    dirs, paths = exports
    server = Server(ServeOptions(dirs[1], items=paths["items"], port=0, max_wait_ms=5.0)).start()
    yield server
    server.stop()


def test_answers_equal_the_exact_top_k_with_exclusions(exports, server):
    dirs, paths = exports
    want, want_scores, features = exact_answers(dirs[1], paths, 10)
    seen = pq.read_table(paths["test"]).column("seen_items").to_pylist()
    got = [None] * len(features)

    def ask(users):  # several clients at once: their requests are batched together
        with RetrievalClient(f"127.0.0.1:{server.port}") as client:
            for u in users:
                got[u] = client.top_k(features[u], k=10, exclude=seen[u])

    threads = [threading.Thread(target=ask, args=(range(i, len(features), 8),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [[i for i, _ in answer] for answer in got] == want
    np.testing.assert_allclose([[s for _, s in answer] for answer in got], want_scores, rtol=0, atol=1e-5)
    assert not set(got[0][0][:1]) & set(seen[0])
    with RetrievalClient(f"127.0.0.1:{server.port}") as client:
        assert client.health() == {"live": True, "ready": True, "export_dir": dirs[1], "num_items": 200}
        assert len(client.top_k(features[0])) == 10  # the server's --top_k


@pytest.mark.parametrize("change, message", [
    (lambda f: {k: v for k, v in f.items() if k != "age"}, "missing feature column 'age'"),
    (lambda f: {**f, "agee": 3}, "unknown feature column 'agee' (did you mean 'age'?)"),
    (lambda f: {**f, "hist_item_ids": "3 4"}, "column 'hist_item_ids' (feature 'hist_item_ids'): expected"),
    (lambda f: {**f, "user_id": 10_000}, "user_id"),  # an id beyond num_buckets: found when parsing
])
def test_bad_requests_get_invalid_argument_and_spare_the_others(exports, server, change, message):
    dirs, paths = exports
    want, _, features = exact_answers(dirs[1], paths, 5)
    errors, good = [], []

    def send(u):
        with RetrievalClient(f"127.0.0.1:{server.port}") as client:
            for _ in range(3):
                good.append(([i for i, _ in client.top_k(features[u], k=5, exclude=[])], u))
                try:
                    client.top_k(change(features[u]), k=5)
                    errors.append(None)
                except grpc.RpcError as e:
                    errors.append((e.code(), e.details()))

    threads = [threading.Thread(target=send, args=(u,)) for u in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 24 and all(e is not None and e[0] == grpc.StatusCode.INVALID_ARGUMENT for e in errors)
    assert all(message in e[1] for e in errors), errors[0]
    unexcluded, _, _ = exact_answers_no_exclusion(dirs[1], paths, 5)
    assert len(good) == 24 and all(ids == unexcluded[u] for ids, u in good)


def exact_answers_no_exclusion(export_dir: str, paths: dict, k: int):
    test = pq.read_table(paths["test"])
    items = pq.read_table(paths["items"])
    users = torch.from_numpy(load_tower(f"{export_dir}/user").embed(test))
    item_vectors = torch.from_numpy(load_tower(f"{export_dir}/item").embed(items))
    scores, rows = exact_top_k(users, item_vectors, k)
    ids = items.column("item_id").to_numpy()
    return [ids[r].tolist() for r in rows.numpy()], scores.numpy(), None


def test_reload_under_load_loses_no_request(exports, server):
    dirs, paths = exports
    old = exact_answers_no_exclusion(dirs[1], paths, 5)[0]
    features = exact_answers(dirs[1], paths, 5)[2]
    new = exact_answers_no_exclusion(dirs[2], paths, 5)[0]
    assert old != new  # two seeds: two different models
    answers, failures, stop = [], [], threading.Event()

    def hammer(u):
        with RetrievalClient(f"127.0.0.1:{server.port}") as client:
            while not stop.is_set():
                try:
                    response = client.stub.TopK(top_k_request(features[u], k=5), timeout=30)
                    answers.append((u, list(response.int_ids), response.export_dir))
                except grpc.RpcError as e:
                    failures.append(e)

    threads = [threading.Thread(target=hammer, args=(u,)) for u in range(6)]
    for t in threads:
        t.start()
    with RetrievalClient(f"127.0.0.1:{server.port}") as client:
        while len(answers) < 30:
            threading.Event().wait(0.01)
        assert client.reload(dirs[2]) == {"export_dir": dirs[2], "num_items": 200}
        before = len(answers)
        while len(answers) < before + 30:
            threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    for u, ids, export_dir in answers:  # every answer is one export's exact answer, never a mix
        assert ids == (old[u] if export_dir == dirs[1] else new[u])
    assert {a[2] for a in answers} == {dirs[1], dirs[2]}
    assert answers[-1][2] == dirs[2]
    with RetrievalClient(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(grpc.RpcError) as failed:
            client.reload(str(paths["items"]))  # not an export: refused, the current one stays
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"still serving {dirs[2]}" in failed.value.details()
        assert client.health()["export_dir"] == dirs[2]


def test_options_are_checked():
    with pytest.raises(RequestError, match=r"--index: got 'annoy', expected one of flat, ivf, hnsw"):
        ServeOptions("x", index="annoy")
    with pytest.raises(RequestError, match="--items and --item_embeddings: give one"):
        ServeOptions("x", items="a", item_embeddings="b")
