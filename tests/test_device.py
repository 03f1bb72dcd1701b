"""What the GPU path needs, checked on the CPU (issue 15).

A training step must not read values back from the device: on CUDA each such read
(``.item()``, ``float(t)``, ``bool(t)``, a boolean index, ``torch.unique``) makes the host wait
for every queued kernel, so the host stops running ahead of the GPU. On the CPU the same calls
go through the same aten operators, so a dispatch mode that counts them catches them here.
"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from synthetic import write_config

#: aten operators whose result size or value the host must read from the device.
READ_BACK = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
             "item"}


class CountReadBacks(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in READ_BACK:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def _pipeline(tmp_path, edits: dict):
    from recframe.pipeline import Pipeline

    config, paths = write_config(tmp_path, dropout=0.1)
    text = json.dumps(edits).replace("DATA", str(tmp_path / "data"))
    return Pipeline.from_file(config, text)


LISTWISE = {"data_config.exclude_negatives_field": "hist_item_ids",
            "data_config.negative_sampler_v2": {"input_path": "DATA/items.parquet",
                                                "edge_input_path": "DATA/train.parquet",
                                                "num_sample": 4, "user_id_field": "user_id"},
            "model_config.dssm.logq_correction": True,
            "train_config.sparse_optimizer": {"rowwise_adagrad_optimizer": {"lr": 0.05}}}
POINTWISE = {"data_config.negative_sampler": {"input_path": "DATA/items.parquet", "num_sample": 8},
             "model_config.losses": [{"binary_cross_entropy": {}}],
             "model_config.metrics": [{"auc": {}}, {"accuracy": {}}],
             "train_config.sparse_optimizer": {"rowwise_adagrad_optimizer": {"lr": 0.05}}}


@pytest.mark.parametrize("edits", [LISTWISE, POINTWISE], ids=["listwise", "pointwise"])
def test_a_training_step_reads_nothing_back(tmp_path, edits):
    """Forward, loss (in-batch + shared/per-row sampled negatives, accidental hits, excluded
    histories, logQ), backward, training metrics and the sparse optimizer's step."""
    from recframe.training.optim import build_optimizer, split_sparse_dense

    pipeline = _pipeline(tmp_path, edits)
    parser = pipeline.train_parser()
    batches = iter(pipeline.dataset(pipeline.config.train_input_path, parser.columns(), parser, shuffle=False))
    torch.manual_seed(0)
    model = pipeline.build_model()
    tables, _ = split_sparse_dense(model)
    optimizer = build_optimizer(tables, pipeline.config.train_config.sparse_optimizer)
    for _ in range(2):
        batch = next(batches)
        counter = CountReadBacks()
        with counter:
            outputs = model(batch)
            loss = model.compute_loss(outputs, batch)["total"]
            loss.backward()
            model.update_metrics(outputs, batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        assert dict(counter.calls) == {}
    assert bool(model.score(outputs, batch).candidates.masked.any())  # masking took place
    metrics = model.compute_metrics()  # the log step reads them back, once
    assert all(0.0 <= value <= 1.0 for value in metrics.values()) and metrics


def test_binary_metrics_leave_out_masked_pairs():
    """AUC and accuracy over every pair with its validity equal the metrics of the valid pairs."""
    from torchmetrics.functional.classification import binary_auroc

    from recframe.metrics.training import create_metric
    from recframe.protos import metric_pb2

    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, 9.0, -9.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    valid = torch.tensor([True, True, True, True, False, False])  # the two left out would flip both
    auc = create_metric(metric_pb2.MetricConfig(auc=metric_pb2.AUC()))
    auc.update_logits(logits[:2], labels[:2], valid[:2])
    auc.update_logits(logits[2:], labels[2:], valid[2:])
    assert auc.compute() == pytest.approx(0.75)
    assert auc.compute() == pytest.approx(float(binary_auroc(torch.sigmoid(logits[:4]), labels[:4].long())))
    acc = create_metric(metric_pb2.MetricConfig(accuracy=metric_pb2.Accuracy(threshold=0.5)))
    acc.update_logits(logits, labels, valid)
    assert acc.compute() == pytest.approx(0.75)
    acc.reset()
    assert np.isnan(acc.compute())


def test_prefetch_factor_needs_workers(tmp_path):
    from recframe.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data_config.prefetch_factor: set to 4 with num_workers 0, expected "
                                          r"num_workers > 0"):
        _pipeline(tmp_path, {"data_config.prefetch_factor": 4})
    pipeline = _pipeline(tmp_path / "b", {"data_config.prefetch_factor": 4, "data_config.num_workers": 1})
    assert pipeline.data_config.prefetch_factor == 4


def test_a_device_that_is_not_here_is_refused_by_name():
    from recframe.device import DeviceError, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match=r"^train_config.device: unknown device 'gpu', expected auto, cpu, cuda "
                                          r"or cuda:N$"):
        resolve_device("gpu", "train_config.device")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"^--device: 'cuda:1' asked for, but CUDA is not available"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(DeviceError, match=r"GPU\(s\)"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_commands_asked_for_cuda_without_it_exit_2(tmp_path, capsys):
    from recframe.cli import predict, retrieve

    assert predict.main(["--export_dir", str(tmp_path), "--input", "x.parquet", "--output", "y.parquet",
                         "--device", "cuda"]) == 2
    assert "error: --device: 'cuda' asked for, but CUDA is not available" in capsys.readouterr().err
    assert retrieve.main(["--item_embeddings", "a.parquet", "--user_embeddings", "b.parquet", "--output",
                          "c.parquet", "--device", "cuda"]) == 2
    assert "error: --device: 'cuda' asked for, but CUDA is not available" in capsys.readouterr().err


def test_an_exported_program_is_checked_on_the_device_it_is_moved_to(tmp_path):
    """check_on_device (what export --device cuda runs) on the CPU: the moved program passes,
    a model that no longer matches it fails."""
    from recframe.recipes.export import TowerModule, check_on_device, export_program

    pipeline = _pipeline(tmp_path, {})
    torch.manual_seed(0)
    model = pipeline.build_model().eval()
    module = TowerModule(model, "item", pipeline.item_features).eval()
    program = export_program(module, pipeline.item_features)
    check_on_device(program, module, pipeline.item_features, torch.device("cpu"))
    projection = module.tower.projection  # the program holds the very tensors: give the module new ones
    projection.bias = torch.nn.Parameter(projection.bias.detach() + 1.0)
    with pytest.raises(RuntimeError, match=r"^item tower: the exported program moved to cpu differs from the model"):
        check_on_device(program, module, pipeline.item_features, torch.device("cpu"))
