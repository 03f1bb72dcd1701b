"""Encoders that reduce a SEQUENCE group's (B, L, D) embeddings to (B, D_out).

Each encoder is registered in :data:`recframe.registry.SEQUENCE_ENCODERS` under the name of
its config message (a member of ``SequenceEncoder.encoder``) and owns its config rules
(:meth:`BaseSequenceEncoder.check_config`), the group features it reads besides the embedded
sequences (:meth:`~BaseSequenceEncoder.extra_inputs_of`) and its output width
(:meth:`~BaseSequenceEncoder.output_width`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recframe.batch import DENSE
from recframe.config.report import AT_LEAST_ONE, POSITIVE, UNIT_RIGHT_OPEN, join_path, unknown_name
from recframe.protos import model_pb2
from recframe.registry import SEQUENCE_ENCODERS


def masked_pool(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sum or mean of x over valid positions.

    Args:
        x: (B, L, D); mask: (B, L) bool; pooling: "sum" or "mean".
    Returns:
        (B, D); rows without a valid position are zero.
    """
    weights = mask.to(x.dtype).unsqueeze(-1)
    summed = (x * weights).sum(dim=1)
    if pooling == "sum":
        return summed
    return summed / weights.sum(dim=1).clamp(min=1.0)


class BaseSequenceEncoder(nn.Module):
    """The class facts of a sequence encoder: config rules, extra inputs, output width.

    An encoder is built as ``cls(input_dim, message, sequence_length=L)`` and called as
    ``encoder(x (B, L, D), mask (B, L))``, or, when :meth:`extra_inputs_of` names features,
    ``encoder(x, mask, {name: tensor})`` with those features of the group (a
    sequence_raw_feature: (B, L) values; a raw_feature: (B, value_dim)).
    """

    config_ranges: ClassVar[dict] = {}

    @classmethod
    def check_config(cls, message: Any, path: str, group: model_pb2.FeatureGroupConfig, width: int | None,
                     ctx: Any) -> None:
        """Report the problems of the encoder message at ``path`` of ``group``, whose embedded
        sequences are ``width`` wide (None when unknown)."""

    @classmethod
    def extra_inputs_of(cls, message: Any) -> tuple[str, ...]:
        """Features of the group the encoder reads besides the embedded sequences."""
        return ()

    @classmethod
    def output_width(cls, input_dim: int, message: Any) -> int:
        """Width of the encoder's output for (B, L, ``input_dim``) inputs."""
        return input_dim


@SEQUENCE_ENCODERS.register()
class PoolingEncoder(BaseSequenceEncoder):
    """Masked mean or sum pooling. Input (B, L, D) + mask (B, L). Output (B, D)."""

    POOLING_TYPES = ("mean", "sum")

    @classmethod
    def check_config(cls, message, path, group, width, ctx) -> None:
        if message.pooling_type not in cls.POOLING_TYPES:
            ctx.add(join_path(path, "pooling_type"), unknown_name("pooling_type", message.pooling_type,
                                                                  list(cls.POOLING_TYPES)))

    def __init__(self, input_dim: int, config: model_pb2.PoolingEncoder, sequence_length: int = 0) -> None:
        super().__init__()
        self.pooling = config.pooling_type
        self.output_dim = input_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_pool(x, mask, self.pooling)





class RandDropout(nn.Dropout):
    """Dropout whose CPU mask comes from ``torch.rand``: the same distribution as nn.Dropout
    (keep with probability 1 - p, scale by 1 / (1 - p)), a different random stream.

    Why: torch's CPU dropout draws its mask with ``bernoulli_``, about 4x slower than a uniform
    draw and a compare; on (B, L, D) sequence embeddings that was a quarter of a training step
    of the attention view. On CUDA, torch's fused dropout is used as is.

    Input: any shape. Output: the same shape.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.is_cuda:
            return super().forward(x)
        if self.p == 1.0:
            return torch.zeros_like(x)
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class _TransformerLayer(nn.Module):
    """Post-norm Transformer encoder layer with a key padding mask.

    x = LayerNorm(x + Dropout(SelfAttention(x))); x = LayerNorm(x + Dropout(FFN(x))),
    FFN = Linear -> GELU -> Dropout -> Linear.

    Input: x (B, L, D) + attend (B, 1, 1, L) bool, and optionally ``query`` (B,) long: then
    only that position of each row is computed (it still attends to every key), and the
    output is (B, 1, D), equal to that position of the full output. Otherwise (B, L, D).
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attention_weight_dropout = RandDropout(dropout)
        self.dropout = RandDropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim_feedforward), nn.GELU(), RandDropout(dropout),
                                 nn.Linear(dim_feedforward, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, attend: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        if query is not None:
            return self._forward_one_query(x, attend, query)
        batch, length, dim = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        # Masked keys get weight exactly 0, so padded positions never reach a valid one.
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.attention_weight_dropout.p if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        x = self.norm1(x + self.dropout(self.out(attended)))
        return self.norm2(x + self.dropout(self.ffn(x)))

    def _forward_one_query(self, x: torch.Tensor, attend: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        # With one query per row the keys and values need not be projected at every position:
        # q_h . (W_k,h x_l + b_k,h) = (W_k,h^T q_h) . x_l + const, and the constant cancels in the
        # softmax; sum_l p_l (W_v,h x_l + b_v,h) = W_v,h (sum_l p_l x_l) + b_v,h sum_l p_l. So the
        # cost is O(B L D H) instead of O(B L D^2), the same attention up to rounding.
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        weight, bias = self.qkv.weight, self.qkv.bias
        x_query = x[torch.arange(batch, device=x.device), query]  # (B, D)
        q = F.linear(x_query, weight[:dim], bias[:dim]).view(batch, heads, head_dim)
        key_weight = weight[dim:2 * dim].view(heads, head_dim, dim)
        value_weight = weight[2 * dim:].view(heads, head_dim, dim)
        scores_by = torch.einsum("bhe,hed->bhd", q, key_weight) / math.sqrt(head_dim)  # (B, H, D)
        scores = torch.bmm(scores_by, x.transpose(1, 2))  # (B, H, L)
        # Masked keys get weight exactly 0, so padded positions never reach a valid one.
        scores = scores.masked_fill(~attend.view(batch, 1, length), float("-inf"))
        weights = self.attention_weight_dropout(torch.softmax(scores, dim=-1))
        pooled = torch.bmm(weights, x)  # (B, H, D)
        attended = torch.einsum("bhd,hed->bhe", pooled, value_weight) \
            + bias[2 * dim:].view(heads, head_dim) * weights.sum(dim=-1, keepdim=True)
        x = x_query.unsqueeze(1)
        x = self.norm1(x + self.dropout(self.out(attended.reshape(batch, 1, dim))))
        return self.norm2(x + self.dropout(self.ffn(x)))


@SEQUENCE_ENCODERS.register()
class SelfAttentionEncoder(BaseSequenceEncoder):
    """Transformer encoder over the valid positions, then mean or last-position pooling.

    The input gets a learned position embedding by recency (position 0 = the most recent
    valid item, i.e. index ``lengths - 1``), then dropout, then ``num_layers`` post-norm
    layers with a key padding mask, then masked mean over the valid positions or the
    most recent valid position ("last"), then an optional Linear to ``output_dim``. A row
    without valid positions gives zeros (before the projection). With "last" the final layer
    computes only the most recent position (the others would be discarded): same output,
    about a third of the cost for one layer.

    Args:
        input_dim: D, divisible by num_heads.
        config: the SelfAttentionEncoder message.
        sequence_length: L, the number of learned positions.
    Input: (B, L, D) + mask (B, L) bool. Output: (B, output_dim or D).
    """

    POOLING = ("mean", "last")
    config_ranges = {"num_layers": AT_LEAST_ONE, "num_heads": AT_LEAST_ONE, "dropout": UNIT_RIGHT_OPEN}

    @classmethod
    def check_config(cls, message, path, group, width, ctx) -> None:
        if message.pooling not in cls.POOLING:
            ctx.add(join_path(path, "pooling"), unknown_name("pooling", message.pooling, list(cls.POOLING)))
        if width is not None and message.num_heads > 0 and width % message.num_heads:
            ctx.add(join_path(path, "num_heads"), f"got {message.num_heads} for a group width of {width} (the sum of "
                                                  "its sequences' embedding_dim), expected a divisor of the group width")

    @classmethod
    def output_width(cls, input_dim: int, message: Any) -> int:
        return int(message.output_dim) or input_dim

    def __init__(self, input_dim: int, config: model_pb2.SelfAttentionEncoder, sequence_length: int = 0) -> None:
        super().__init__()
        if config.num_heads == 0 or input_dim % config.num_heads:
            raise ValueError(f"self_attention: num_heads={config.num_heads} must divide the group width {input_dim}")
        if config.pooling not in ("mean", "last"):
            raise ValueError(f"self_attention: pooling must be 'mean' or 'last', got {config.pooling!r}")
        if sequence_length <= 0:
            raise ValueError("self_attention needs the group's sequence_length")
        self.pooling = config.pooling
        self.positions = nn.Embedding(sequence_length, input_dim)
        nn.init.normal_(self.positions.weight, 0.0, 0.02)
        self.input_dropout = RandDropout(config.dropout)
        hidden = config.dim_feedforward or 4 * input_dim
        self.layers = nn.ModuleList(
            _TransformerLayer(input_dim, config.num_heads, hidden, config.dropout) for _ in range(config.num_layers))
        self.projection = nn.Linear(input_dim, config.output_dim) if config.output_dim else None
        self.output_dim = self.output_width(input_dim, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1)
        index = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        recency = (lengths.unsqueeze(1) - 1 - index).clamp(min=0)  # 0 = most recent valid position
        x = self.input_dropout(x + self.positions(recency))
        # A row without valid positions attends to position 0 (not NaN); its output is zeroed.
        empty = lengths == 0
        attend = (mask | (empty.unsqueeze(1) & (index == 0))).unsqueeze(1).unsqueeze(1)
        if self.pooling == "last":
            # Only the most recent position is pooled, so the last layer computes only it.
            last = (lengths - 1).clamp(min=0)
            for layer in self.layers[:-1]:
                x = layer(x, attend)
            if self.layers:
                pooled = self.layers[-1](x, attend, query=last).squeeze(1)
            else:
                pooled = x[torch.arange(x.shape[0], device=x.device), last]
            pooled = pooled.masked_fill(empty.unsqueeze(-1), 0.0)
        else:
            for layer in self.layers:
                x = layer(x, attend)
            x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
            pooled = x.sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)
        return self.projection(pooled) if self.projection is not None else pooled


@SEQUENCE_ENCODERS.register()
class TimeDecayPoolingEncoder(BaseSequenceEncoder):
    """Pooling weighted by age: w_j = exp(-(t_sample - t_j) / tau) over valid positions.

    Ages below 0 count as 0. With ``normalize`` the output is sum_j w_j x_j / sum_j w_j
    (computed as a masked softmax of -age / tau, so old histories do not underflow to 0/0);
    without, sum_j w_j x_j. A row without valid positions gives zeros.

    Args:
        input_dim: D. config: the TimeDecayPoolingEncoder message.
    Input: (B, L, D) + mask (B, L) + {timestamp_feature: (B, L) float, sample_time_feature:
    (B, 1) float}. Output: (B, D).
    """

    config_ranges = {"tau_seconds": POSITIVE}

    @classmethod
    def extra_inputs_of(cls, message: Any) -> tuple[str, ...]:
        return tuple(n for n in (message.timestamp_feature, message.sample_time_feature) if n)

    @classmethod
    def check_config(cls, message, path, group, width, ctx) -> None:
        """timestamp_feature: a sequence_raw_feature of the group; sample_time_feature: a
        raw_feature of the group with value_dim 1, no boundaries and no normalizer."""
        members = list(group.feature_names)
        for field, kind, extra in (("timestamp_feature", "sequence_raw_feature", ""),
                                   ("sample_time_feature", "raw_feature", " with value_dim 1")):
            name, where = getattr(message, field), join_path(path, field)
            if not name:
                ctx.add(where, f"not set, expected the {kind}{extra} of the group that holds the "
                               + ("timestamp of each position" if kind != "raw_feature" else "row's sample time"))
            elif name not in members:
                ctx.add(where, unknown_name("feature", name, members, expected=f"a {kind} listed in the group's feature_names"))
            elif ctx.feature_field(name) not in (None, kind):
                ctx.add(where, f"feature '{name}' is a {ctx.feature_field(name)}, expected a {kind}{extra}")
            elif kind == "raw_feature" and name in ctx.features:
                feature = ctx.features[name]
                normalizer = feature.config.HasField("normalizer")
                if feature.value_dim != 1 or feature.kind != DENSE or normalizer:
                    ctx.add(where, f"raw_feature '{name}' has value_dim {feature.value_dim}"
                                   f"{', boundaries' if feature.kind != DENSE else ''}"
                                   f"{', a normalizer' if normalizer else ''}, expected value_dim "
                                   "1, no boundaries and no normalizer (raw seconds)")

    def __init__(self, input_dim: int, config: model_pb2.TimeDecayPoolingEncoder, sequence_length: int = 0) -> None:
        super().__init__()
        if not config.tau_seconds > 0:
            raise ValueError(f"time_decay_pooling: tau_seconds must be > 0, got {config.tau_seconds}")
        if not config.timestamp_feature or not config.sample_time_feature:
            raise ValueError("time_decay_pooling needs timestamp_feature and sample_time_feature")
        log_tau = torch.tensor(math.log(config.tau_seconds), dtype=torch.float32)
        if config.learnable_tau:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)
        self.timestamp_feature = config.timestamp_feature
        self.sample_time_feature = config.sample_time_feature
        self.extra_inputs = self.extra_inputs_of(config)
        self.normalize = config.normalize
        self.output_dim = input_dim

    def log_weights(self, timestamps: torch.Tensor, sample_time: torch.Tensor) -> torch.Tensor:
        """(B, L) float64 -age / tau, ages from (B, L) timestamps and (B, 1) or (B,) sample times."""
        sample_time = sample_time.reshape(-1, 1)
        age = (sample_time.double() - timestamps.double()).clamp(min=0.0)
        return -age / self.log_tau.double().exp()

    def weights(self, timestamps: torch.Tensor, sample_time: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) float32 pooling weights (0 at padded positions; normalized when ``normalize``).

        Computed in float64: ages of years over a tau of hours stay exact before the softmax.
        """
        log_w = self.log_weights(timestamps, sample_time).masked_fill(~mask, float("-inf"))
        if self.normalize:
            w = torch.nan_to_num(torch.softmax(log_w, dim=1), nan=0.0)  # nan: rows without valid positions
        else:
            w = log_w.exp()
        return w.to(torch.float32)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights(inputs[self.timestamp_feature], inputs[self.sample_time_feature], mask)
        return (x * w.to(x.dtype).unsqueeze(-1)).sum(dim=1)


def create_sequence_encoder(input_dim: int, config: model_pb2.SequenceEncoder | None,
                            sequence_length: int = 0) -> nn.Module:
    """Build the registered encoder named by the oneof that is set (default: mean pooling);
    see :class:`BaseSequenceEncoder` for the calling convention."""
    cls, message = encoder_class(config)
    return cls(input_dim, message, sequence_length=sequence_length)


def encoder_class(config: model_pb2.SequenceEncoder | None) -> tuple[type[BaseSequenceEncoder], Any]:
    """(registered class, message) of a SequenceEncoder message (None or unset: mean pooling)."""
    which = config.WhichOneof("encoder") if config is not None else None
    message = getattr(config, which) if which else model_pb2.PoolingEncoder()
    return SEQUENCE_ENCODERS.get(type(message).DESCRIPTOR.name), message
