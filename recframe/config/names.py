"""Canonical names the config accepts (activations, initializers, metrics, devices).

The modules, trainer and evaluator import these so the validator and the code that runs
agree on every accepted spelling.
"""

from __future__ import annotations

import re

from recframe.protos import eval_pb2

#: Canonical activation names of MLP.activation.
ACTIVATIONS = ("relu", "tanh", "prelu", "gelu", "sigmoid", "silu", "leaky_relu", "none")
#: TorchEasyRec/PyTorch class names (after "nn.", lower-cased) -> canonical name.
_TORCH_CLASS_NAMES = {
    "relu": "relu", "tanh": "tanh", "prelu": "prelu", "gelu": "gelu", "sigmoid": "sigmoid",
    "silu": "silu", "leakyrelu": "leaky_relu", "identity": "none",
}
#: Values of MLP.weight_init.
WEIGHT_INITS = ("default", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform")
#: Loss kinds (a loss class's ``kind``, a metric class's ``requires_loss``): a listwise loss
#: ranks each row's positive among its candidates (it needs negatives); a pointwise loss scores
#: (user, item) pairs against labels.
LISTWISE = "listwise"
POINTWISE = "pointwise"
#: Values of TrainConfig.device besides "cuda:N".
DEVICES = ("auto", "cpu", "cuda")

#: torch.compile modes of train_config.compile_mode.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
#: Sharding types of train_config.embedding_sharding (row_wise: CUDA only in TorchRec's CPU build).
SHARDING_TYPES = ("table_wise", "column_wise", "row_wise", "data_parallel")
#: The sparse optimizers TorchRec runs fused in the backward pass of sharded tables.
FUSED_OPTIMIZERS = ("rowwise_adagrad_optimizer", "adam_optimizer", "adagrad_optimizer", "sgd_optimizer")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: Top-K cut-offs of the evaluator when eval_config.top_k is empty.
DEFAULT_TOP_K = (10, 50, 100)
#: Metric families reported per K by the evaluator.
TOP_K_METRICS = ("hit_rate", "recall", "ndcg")
#: Item index types of retrieval (recframe.serving.index): exact, faiss IVF, faiss HNSW.
INDEX_TYPES = ("flat", "ivf", "hnsw")
#: Search metrics of retrieval: inner product, or cosine (both sides L2-normalised first).
SEARCH_METRICS = ("ip", "cosine")
#: Prefix of the metrics computed without excluding any candidate (eval_config.report_raw).
RAW_PREFIX = "raw_"


def activation_name(name: str) -> str:
    """Return the canonical lowercase activation name of ``name``.

    Accepts the canonical names (``relu``, ``tanh``, ``prelu``, ``gelu``, ``sigmoid``,
    ``silu``, ``leaky_relu``, ``none``) in any case, and TorchEasyRec's ``"nn.<Class>"``
    spelling with the class name in any case: ``"nn.ReLU"``, ``"nn.LeakyReLU"``,
    ``"nn.Identity"`` (= ``none``), ...

    Raises:
        ValueError: the name is not a supported activation.
    """
    key = name.strip()
    if key.lower() in ACTIVATIONS:
        return key.lower()
    if key.startswith("nn.") and key[3:].lower() in _TORCH_CLASS_NAMES:
        return _TORCH_CLASS_NAMES[key[3:].lower()]
    raise ValueError(f"unknown activation '{name}', expected one of {', '.join(ACTIVATIONS)} or nn.<Class>")


def is_valid_device(device: str) -> bool:
    """True for "auto", "cpu", "cuda" and "cuda:N"."""
    return bool(_DEVICE.match(device))


def resolve_top_k(eval_config: eval_pb2.EvalConfig | None) -> list[int]:
    """Return the evaluation cut-offs: eval_config.top_k (ascending, unique) or [10, 50, 100]."""
    if eval_config is None or len(eval_config.top_k) == 0:
        return list(DEFAULT_TOP_K)
    return sorted(set(int(k) for k in eval_config.top_k))


def pointwise_metric_names(eval_config: eval_pb2.EvalConfig | None) -> list[str]:
    """Names of the pointwise metrics of ``eval_config.pointwise_metrics`` ("auc",
    "accuracy": the member set in each entry), each once, in config order."""
    if eval_config is None:
        return []
    names = (m.WhichOneof("metric") for m in eval_config.pointwise_metrics)
    return list(dict.fromkeys(n for n in names if n))


def eval_metric_names(eval_config: eval_pb2.EvalConfig | None) -> list[str]:
    """Names of the metrics the evaluator reports for this eval_config.

    ``hit_rate@K``, ``recall@K``, ``ndcg@K`` for each K of :func:`resolve_top_k`, and
    ``mrr``; when candidates are excluded (``exclude_items_field``) and ``report_raw`` is on
    (the default), the same names prefixed ``raw_`` as well; then the pointwise metrics of
    ``pointwise_metrics`` (``auc``, ``accuracy``: :func:`pointwise_metric_names`).
    """
    names = [f"{family}@{k}" for k in resolve_top_k(eval_config) for family in TOP_K_METRICS]
    names.append("mrr")
    if eval_config is not None and eval_config.report_raw and eval_config.exclude_items_field:
        names += [RAW_PREFIX + n for n in names]
    return names + pointwise_metric_names(eval_config)
