"""MLP: the tower body."""

from __future__ import annotations

import torch
from torch import nn

from recframe.config.names import ACTIVATIONS, WEIGHT_INITS, activation_name
from recframe.config.report import join_path, one_of, show, unknown_name
from recframe.protos import module_pb2

# Canonical activation name (see recframe.config.names) -> module class.
_ACTIVATION_MODULES = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "none": nn.Identity,
}
assert set(_ACTIVATION_MODULES) == set(ACTIVATIONS)

_WEIGHT_INITS = {
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
    "kaiming_uniform": nn.init.kaiming_uniform_,
}
assert set(_WEIGHT_INITS) | {"default"} == set(WEIGHT_INITS)


def activation_module(name: str) -> nn.Module:
    """A new activation module for an activation name (any spelling activation_name accepts)."""
    return _ACTIVATION_MODULES[activation_name(name)]()


class MLP(nn.Module):
    """Stack of Linear -> [BatchNorm1d | LayerNorm] -> activation -> Dropout layers.

    With ``dropout_before_linear`` each layer is Dropout -> Linear -> [norm] -> activation.

    Args:
        in_features: width D_in of the input.
        config: the MLP message (hidden_units, activation, use_bn, use_ln, dropout_ratio,
            bias, weight_init, dropout_before_linear).
    Input: (B, D_in) float. Output: (B, hidden_units[-1]).
    """

    def __init__(self, in_features: int, config: module_pb2.MLP) -> None:
        super().__init__()
        units = list(config.hidden_units)
        ratios = list(config.dropout_ratio)
        if len(ratios) not in (0, 1, len(units)):
            raise ValueError(
                f"dropout_ratio has {len(ratios)} values for {len(units)} hidden_units, expected 0, 1 or {len(units)}"
            )
        if len(ratios) == 1:
            ratios = ratios * len(units)
        ratios = ratios or [0.0] * len(units)
        activation = activation_name(config.activation)
        layers: list[nn.Module] = []
        width = in_features
        for out, ratio in zip(units, ratios):
            linear = nn.Linear(width, out, bias=config.bias)
            self._init_linear(linear, config.weight_init)
            block: list[nn.Module] = []
            if config.dropout_before_linear and ratio > 0:
                block.append(nn.Dropout(ratio))
            block.append(linear)
            if config.use_bn:
                block.append(nn.BatchNorm1d(out))
            if config.use_ln:
                block.append(nn.LayerNorm(out))
            block.append(_ACTIVATION_MODULES[activation]())
            if not config.dropout_before_linear and ratio > 0:
                block.append(nn.Dropout(ratio))
            layers.append(nn.Sequential(*block))
            width = out
        self.layers = nn.Sequential(*layers)
        self.output_dim = width

    @staticmethod
    def check_config(mlp: module_pb2.MLP, path: str, ctx) -> None:
        """MLP rules (layer widths and dropout ratios are range-checked by the generic table)."""
        layers = len(mlp.hidden_units)
        if layers == 0:
            ctx.add(join_path(path, "hidden_units"), "empty, expected at least one layer width "
                                                     "(leave mlp out to pass the input straight through)")
        try:
            activation_name(mlp.activation)
        except ValueError:
            ctx.add(join_path(path, "activation"), unknown_name(
                "activation", mlp.activation, list(ACTIVATIONS),
                expected=f"one of {one_of(ACTIVATIONS)} (or PyTorch style, e.g. 'nn.ReLU')"))
        if mlp.use_bn and mlp.use_ln:
            ctx.add(path, "use_bn and use_ln are both true, expected at most one of them")
        ratios = len(mlp.dropout_ratio)
        if ratios not in (0, 1, layers):
            ctx.add(join_path(path, "dropout_ratio"),
                    f"got {ratios} values for {layers} layers, expected 1 or {layers} values")
        if mlp.dropout_before_linear and not any(r > 0 for r in mlp.dropout_ratio):
            values = ", ".join(show(r) for r in mlp.dropout_ratio)
            ratio = f"dropout_ratio [{values}]" if mlp.dropout_ratio else "no dropout_ratio"
            ctx.add(join_path(path, "dropout_before_linear"),
                    f"true with {ratio}: there is no dropout to move (it would be ignored), expected a dropout_ratio "
                    "above 0 (or no dropout_before_linear)")
        if mlp.weight_init not in WEIGHT_INITS:
            ctx.add(join_path(path, "weight_init"), unknown_name("weight_init", mlp.weight_init, list(WEIGHT_INITS)))

    @staticmethod
    def _init_linear(linear: nn.Linear, weight_init: str) -> None:
        if weight_init in ("", "default"):
            return
        if weight_init not in _WEIGHT_INITS:
            raise ValueError(f"unknown weight_init '{weight_init}', expected one of {', '.join(WEIGHT_INITS)}")
        _WEIGHT_INITS[weight_init](linear.weight)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
