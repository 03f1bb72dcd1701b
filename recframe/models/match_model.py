"""MatchModel: two towers scored by a similarity over a temperature."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from recframe.batch import SEQUENCE, Batch
from recframe.config.report import POSITIVE, NON_NEGATIVE, join_path, one_of, unknown_name
from recframe.features import Feature
from recframe.losses.base import LISTWISE, Loss
from recframe.metrics.training import create_metric
from recframe.models.tower import Tower
from recframe.modules import MLP, EmbeddingGroup
from recframe.modules.embedding_group import forget_sharded_lookups
from recframe.negatives.candidates import ScoredBatch
from recframe.negatives.global_in_batch import gather_global_in_batch
from recframe.protos import loss_pb2, model_pb2
from recframe.protoutil import oneof_message
from recframe.registry import LOSSES


class MatchModel(nn.Module):
    """A user tower and an item tower; losses and training metrics over their candidates.

    Subclasses decide which EmbeddingGroup serves each tower
    (:meth:`build_embedding_groups`) and may use their own tower class (``tower_class``, a
    :class:`~recframe.models.tower.Tower` subclass); register them in
    :data:`recframe.registry.MODELS` and name them in ``model_config.model_class``.

    Args:
        model_config: the ModelConfig (feature groups, model message, losses, metrics).
        features: every configured feature by name.
        label_fields: the data's label columns (pointwise losses read the first).
        global_in_batch_negative: under torchrun, contrast each user against every rank's
            positives (train_config.global_in_batch_negative).
        sparse_embeddings: the embedding tables get sparse gradients (train_config.
            sparse_optimizer.dense_gradients false); passed to the EmbeddingGroups.

    forward(batch) returns ``{"user_emb": (B, D), "item_emb": (N, D), "aux_loss": scalar}``
    (N item rows: the B positives, then sampled negatives). :meth:`score` turns them into a
    :class:`~recframe.negatives.candidates.ScoredBatch`, which :meth:`compute_loss` and
    :meth:`update_metrics` consume (the first call caches it in ``outputs["scored"]``).
    """

    tower_class: type[Tower] = Tower
    config_ranges = {"temperature": POSITIVE, "output_dim": NON_NEGATIVE}
    TOWERS = ("user_tower", "item_tower")

    # ---- config rules ------------------------------------------------------------------------

    @classmethod
    def check_config(cls, message, path: str, ctx) -> None:
        """Feature groups (EmbeddingGroup's rules), towers and their widths, variational
        dropout, logQ and global in-batch negatives of the two-tower model message at ``path``."""
        EmbeddingGroup.check_config(ctx)
        model_config = ctx.config.model_config
        if model_config.HasField("variational_dropout") and not any(
                g.group_type == model_pb2.DEEP and len(g.feature_names) >= 2 and not g.HasField("dense_projection")
                for g in model_config.feature_groups):
            ctx.add("model_config.variational_dropout", "set, but no DEEP group has two or more features (it would "
                                                        "be ignored), expected such a group or no variational_dropout")
        cls._check_towers(message, path, ctx)
        if message.logq_correction:
            if not any(kind == LISTWISE for kind in ctx.loss_kinds.values()):
                ctx.add(join_path(path, "logq_correction"),
                        f"true without a listwise loss, expected {one_of(ctx.loss_names_of_kind(LISTWISE))}")
            ctx.require_item_id(f"{join_path(path, 'logq_correction')} to count item frequencies")
        sampler = ctx.config.data_config.WhichOneof("sampler")
        if (message.HasField("in_batch_negative") and message.in_batch_negative and ctx.loss_kinds
                and LISTWISE not in ctx.loss_kinds.values() and sampler is None):
            ctx.add(join_path(path, "in_batch_negative"),
                    f"true with only {one_of(ctx.loss_kinds)} and no data_config sampler, which scores each row's "
                    "own (user, item) pair against the label column without negatives (it would be ignored), "
                    "expected a data_config sampler (the other rows' positives then join the sampled negatives), "
                    f"a {one_of(ctx.loss_names_of_kind(LISTWISE))} loss, or no in_batch_negative")
        if ctx.config.train_config.global_in_batch_negative and not message.in_batch_negative:
            ctx.add("train_config.global_in_batch_negative",
                    f"true with {path}.in_batch_negative false, expected in_batch_negative: true (the global "
                    "batch's positives are the in-batch negatives)")

    @classmethod
    def _check_towers(cls, message, path: str, ctx) -> None:
        used: dict[str, str] = {}  # group name -> tower
        for side in cls.TOWERS:
            if not message.HasField(side):
                continue  # a required field: reported with the other missing required fields
            tower, tpath = getattr(message, side), join_path(path, side)
            if not tower.input:
                ctx.add(join_path(tpath, "input"), "empty, expected at least one feature group name")
            seen: set[str] = set()
            for j, name in enumerate(tower.input):
                where = f"{tpath}.input[{j}]"
                if name not in ctx.groups:
                    ctx.add(where, unknown_name("feature group", name, list(ctx.groups)))
                    continue
                if name in seen:
                    ctx.add(where, f"group '{name}' is listed twice, expected each group once")
                    continue
                seen.add(name)
                if name in used:
                    ctx.add(where, f"group '{name}' is also an input of {used[name]}, "
                                   "expected each feature group in one tower only")
                used.setdefault(name, side)
                if side == "item_tower":
                    cls._check_item_group(where, ctx.groups[name][1], ctx)
            if tower.HasField("mlp"):
                MLP.check_config(tower.mlp, join_path(tpath, "mlp"), ctx)
        for name, (i, _) in ctx.groups.items():
            if name and name not in used:
                ctx.add(f"model_config.feature_groups[{i}]", f"group '{name}' is not an input of any tower (it would "
                                                             "be ignored), expected it in user_tower.input or "
                                                             "item_tower.input")
        if all(message.HasField(side) for side in cls.TOWERS):
            user, item = (cls._tower_width(getattr(message, side), message.output_dim, ctx) for side in cls.TOWERS)
            if user is not None and item is not None and user != item:
                ctx.add(path, f"user_tower outputs {user} values and item_tower {item}, expected equal widths for "
                              "the similarity (set output_dim, or make the last hidden_units agree)")

    @staticmethod
    def _tower_width(tower: model_pb2.Tower, output_dim: int, ctx) -> int | None:
        widths = [EmbeddingGroup.group_width(ctx.groups[g][1], ctx.features) if g in ctx.groups else None
                  for g in tower.input]
        input_width = sum(widths) if widths and None not in widths else None
        return Tower.output_width(tower, output_dim, input_width)

    @staticmethod
    def _check_item_group(where: str, group: model_pb2.FeatureGroupConfig, ctx) -> None:
        """A candidate item has no history: no sequence features in the item tower."""
        expected = "expected no sequence features in the item tower (a candidate item has no history)"
        if group.group_type == model_pb2.SEQUENCE:
            ctx.add(where, f"group '{group.group_name}' is a SEQUENCE group, {expected}")
            return
        for name in group.feature_names:
            feature = ctx.features.get(name)
            if feature is not None and feature.kind == SEQUENCE:
                ctx.add(where, f"group '{group.group_name}' contains sequence feature '{name}', {expected}")

    # ---- the model ---------------------------------------------------------------------------

    def __init__(self, model_config: model_pb2.ModelConfig, features: Mapping[str, Feature],
                 label_fields: list[str] | tuple[str, ...] = (), *, global_in_batch_negative: bool = False,
                 sparse_embeddings: bool = False) -> None:
        super().__init__()
        self.sparse_embeddings = sparse_embeddings
        self.model_config = model_config
        cfg = self.cfg = oneof_message(model_config, "model")
        self.cosine = cfg.similarity == model_pb2.COSINE
        self.temperature = float(cfg.temperature)
        self.in_batch_negative = cfg.in_batch_negative
        self.logq_correction = cfg.logq_correction
        self.global_in_batch_negative = global_in_batch_negative
        self.label_field = label_fields[0] if label_fields else None
        groups = {g.group_name: g for g in model_config.feature_groups}
        user_eg, item_eg = self.build_embedding_groups(
            features, [groups[n] for n in cfg.user_tower.input], [groups[n] for n in cfg.item_tower.input])
        dropout = model_config.variational_dropout if model_config.HasField("variational_dropout") else None
        self.user_tower = self.tower_class(user_eg, cfg.user_tower, cfg.output_dim, self.cosine, dropout)
        self.item_tower = self.tower_class(item_eg, cfg.item_tower, cfg.output_dim, self.cosine, dropout)
        if item_eg is user_eg:
            self.item_tower.refer_to_embedding_group()
        if self.user_tower.output_dim != self.item_tower.output_dim:
            raise ValueError(
                f"user tower outputs {self.user_tower.output_dim} dims but item tower {self.item_tower.output_dim}; "
                "make the last hidden_units equal or set output_dim"
            )
        losses = list(model_config.losses) or [loss_pb2.LossConfig(softmax_cross_entropy=loss_pb2.SoftmaxCrossEntropy())]
        self.loss_names = [loss.WhichOneof("loss") for loss in losses]
        self.loss_weights = [float(loss.weight) for loss in losses]
        self.losses = nn.ModuleList(self._create_loss(loss) for loss in losses)
        self.metrics = nn.ModuleList([create_metric(m) for m in model_config.metrics])

    @staticmethod
    def _create_loss(config: loss_pb2.LossConfig) -> Loss:
        message = oneof_message(config, "loss")
        return LOSSES.get(type(message).DESCRIPTOR.name)(message)

    def build_embedding_groups(self, features: Mapping[str, Feature], user_groups: list[model_pb2.FeatureGroupConfig],
                               item_groups: list[model_pb2.FeatureGroupConfig]) -> tuple[EmbeddingGroup, EmbeddingGroup]:
        """The EmbeddingGroups of the user tower and of the item tower (may be one object),
        with ``sparse=self.sparse_embeddings``."""
        raise NotImplementedError

    def user_embedding(self, batch: Batch) -> torch.Tensor:
        """(B, D) user embeddings (normalized for COSINE)."""
        return self.user_tower(batch)

    def item_embedding(self, batch: Batch) -> torch.Tensor:
        """(N, D) item embeddings (normalized for COSINE)."""
        return self.item_tower(batch)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        try:
            user, item = self.user_tower(batch), self.item_tower(batch)
        finally:
            forget_sharded_lookups(batch)  # a sharded lookup is shared by the towers of one forward only
        # Each tower's penalty is per row it embedded (the item tower: positives and sampled rows).
        aux = self.user_tower.penalty(user.shape[0]) + self.item_tower.penalty(item.shape[0])
        return {"user_emb": user, "item_emb": item, "aux_loss": aux}

    def score(self, outputs: dict, batch: Batch) -> ScoredBatch:
        """The batch's embeddings as losses and metrics read them (cached in ``outputs``)."""
        if "scored" not in outputs:
            global_rows = None
            if self.global_in_batch_negative and self.in_batch_negative:
                global_rows = gather_global_in_batch(outputs["item_emb"], batch)
            outputs["scored"] = ScoredBatch(
                outputs["user_emb"], outputs["item_emb"], batch, temperature=self.temperature,
                in_batch_negative=self.in_batch_negative, logq_correction=self.logq_correction,
                label_field=self.label_field, global_in_batch=global_rows)
        return outputs["scored"]

    def compute_loss(self, outputs: dict, batch: Batch) -> dict[str, torch.Tensor]:
        """Every configured loss term (weighted), the variational dropout penalty, and their
        sum as "total"."""
        scored = self.score(outputs, batch)
        terms = {name: weight * loss(scored)
                 for name, weight, loss in zip(self.loss_names, self.loss_weights, self.losses)}
        if self.user_tower.dropouts or self.item_tower.dropouts:
            terms["variational_dropout"] = outputs["aux_loss"]
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    @torch.no_grad()
    def update_metrics(self, outputs: dict, batch: Batch) -> None:
        """Accumulate the configured training metrics over a batch."""
        if len(self.metrics):
            scored = self.score(outputs, batch)
            for metric in self.metrics:
                metric.update(scored)

    def compute_metrics(self, reset: bool = True) -> dict[str, float]:
        """{metric name: value} over the batches since the last reset."""
        values = {m.name: m.compute() for m in self.metrics}
        if reset:
            for m in self.metrics:
                m.reset()
        return values

    def feature_importance(self) -> dict[str, dict[str, float]]:
        """Per group with variational dropout (user tower's first): {feature: keep
        probability} in the group's feature order; empty without variational dropout."""
        return {**self.user_tower.feature_importance(), **self.item_tower.feature_importance()}

    def feature_ranking(self) -> dict[str, list[tuple[str, float]]]:
        """Per group with variational dropout: (feature, keep probability), best first."""
        return {**self.user_tower.feature_ranking(), **self.item_tower.feature_ranking()}


__all__ = ["MatchModel"]
