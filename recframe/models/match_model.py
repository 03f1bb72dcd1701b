"""MatchModel: the two-tower base shared by DSSM and DSSMV2."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from recframe.batch import Batch
from recframe.features import Feature
from recframe.losses import binary_cross_entropy, mask_accidental_hits, softmax_cross_entropy
from recframe.metrics.in_batch import create_metric
from recframe.modules import MLP, EmbeddingGroup, VariationalDropout
from recframe.protos import loss_pb2, model_pb2


class Tower(nn.Module):
    """Concatenated group outputs -> MLP -> optional Linear projection.

    Input: (B, D_in). Output: (B, output_dim or mlp.hidden_units[-1] or D_in).
    """

    def __init__(self, in_features: int, config: model_pb2.Tower, output_dim: int) -> None:
        super().__init__()
        self.mlp = MLP(in_features, config.mlp) if config.HasField("mlp") and config.mlp.hidden_units else None
        width = self.mlp.output_dim if self.mlp is not None else in_features
        self.projection = nn.Linear(width, output_dim) if output_dim > 0 else None
        self.output_dim = output_dim if output_dim > 0 else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp is not None:
            x = self.mlp(x)
        if self.projection is not None:
            x = self.projection(x)
        return x


class MatchModel(nn.Module):
    """Two towers scored by a similarity over temperature.

    Subclasses decide which EmbeddingGroup serves each tower (``_embedding_groups``).

    Args:
        model_config: the ModelConfig (feature groups, model message, losses, metrics).
        features: every configured feature by name.
        label_fields: the data's label columns (pointwise loss reads the first).

    forward(batch) returns {"user_emb": (B, D), "item_emb": (B, D), "aux_loss": scalar}
    (embeddings L2-normalized for COSINE). :meth:`listwise_logits` /
    :meth:`pointwise_logits` turn them into (B, B) listwise logits (positive on the
    diagonal) or (B,) pointwise logits. :meth:`compute_loss` stores the listwise logits it
    computes in ``outputs["listwise_logits"]``, and :meth:`update_metrics` reuses them
    instead of computing them again.
    """

    def __init__(self, model_config: model_pb2.ModelConfig, features: Mapping[str, Feature],
                 label_fields: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model_config = model_config
        cfg = getattr(model_config, model_config.WhichOneof("model"))
        self.cfg = cfg
        self.cosine = cfg.similarity == model_pb2.COSINE
        self.temperature = float(cfg.temperature)
        self.in_batch_negative = cfg.in_batch_negative
        self.logq_correction = cfg.logq_correction
        self.label_field = label_fields[0] if label_fields else None
        groups = {g.group_name: g for g in model_config.feature_groups}
        self.user_groups = list(cfg.user_tower.input)
        self.item_groups = list(cfg.item_tower.input)
        user_eg, item_eg = self._embedding_groups(
            features, [groups[n] for n in self.user_groups], [groups[n] for n in self.item_groups]
        )
        self.user_embedding_group = user_eg
        if item_eg is user_eg:
            # One shared module is registered once (under user_embedding_group), so each
            # shared table is a single entry of state_dict(), not one per attribute name.
            object.__setattr__(self, "item_embedding_group", item_eg)
        else:
            self.item_embedding_group = item_eg
        self.dropouts = nn.ModuleDict()
        if model_config.HasField("variational_dropout"):
            for eg, names in ((self.user_embedding_group, self.user_groups), (self.item_embedding_group, self.item_groups)):
                for name in names:
                    if groups[name].group_type == model_pb2.DEEP and len(groups[name].feature_names) > 1:
                        self.dropouts[name] = VariationalDropout(
                            list(groups[name].feature_names), eg.feature_dims(name), model_config.variational_dropout
                        )
        user_in = sum(self.user_embedding_group.group_dim(n) for n in self.user_groups)
        item_in = sum(self.item_embedding_group.group_dim(n) for n in self.item_groups)
        self.user_tower = Tower(user_in, cfg.user_tower, cfg.output_dim)
        self.item_tower = Tower(item_in, cfg.item_tower, cfg.output_dim)
        if self.user_tower.output_dim != self.item_tower.output_dim:
            raise ValueError(
                f"user tower outputs {self.user_tower.output_dim} dims but item tower {self.item_tower.output_dim}; "
                "make the last hidden_units equal or set output_dim"
            )
        self.losses = list(model_config.losses) or [
            loss_pb2.LossConfig(softmax_cross_entropy=loss_pb2.SoftmaxCrossEntropy())
        ]
        self.metrics = nn.ModuleList([create_metric(m) for m in model_config.metrics])

    def _embedding_groups(self, features, user_groups, item_groups) -> tuple[EmbeddingGroup, EmbeddingGroup]:
        raise NotImplementedError

    def _tower_input(self, eg: EmbeddingGroup, names: list[str], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = eg(batch, names)
        penalty = torch.zeros((), device=next(iter(outputs.values())).device)
        parts = []
        for name in names:
            x = outputs[name]
            if name in self.dropouts:
                x, p = self.dropouts[name](x)
                penalty = penalty + p
            parts.append(x)
        return torch.cat(parts, dim=-1), penalty

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.cosine else x

    def user_embedding(self, batch: Batch) -> torch.Tensor:
        """(B, D) user embeddings (normalized for COSINE)."""
        x, _ = self._tower_input(self.user_embedding_group, self.user_groups, batch)
        return self._finish(self.user_tower(x))

    def item_embedding(self, batch: Batch) -> torch.Tensor:
        """(B, D) item embeddings (normalized for COSINE)."""
        x, _ = self._tower_input(self.item_embedding_group, self.item_groups, batch)
        return self._finish(self.item_tower(x))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        ux, user_penalty = self._tower_input(self.user_embedding_group, self.user_groups, batch)
        ix, item_penalty = self._tower_input(self.item_embedding_group, self.item_groups, batch)
        return {
            "user_emb": self._finish(self.user_tower(ux)),
            "item_emb": self._finish(self.item_tower(ix)),
            "aux_loss": user_penalty + item_penalty,
        }

    def listwise_logits(self, outputs: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """(B, B) logits of each user against every row's item, positive on the diagonal.

        similarity / temperature, minus log q of each candidate (logq_correction), with
        accidental hits (another row holding the same item) masked.
        """
        logits = outputs["user_emb"] @ outputs["item_emb"].T / self.temperature
        if self.logq_correction:
            logits = logits - batch.item_log_q.to(logits.dtype).unsqueeze(0)
        diagonal = torch.arange(logits.shape[0], device=logits.device)
        if batch.item_key is not None:
            logits = mask_accidental_hits(logits, batch.item_key, batch.item_key, diagonal)
        return logits

    def pointwise_logits(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) similarity / temperature of each row's own user and item."""
        return (outputs["user_emb"] * outputs["item_emb"]).sum(dim=-1) / self.temperature

    def compute_loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Every configured loss term (weighted), the aux penalty, and their sum as "total"."""
        terms: dict[str, torch.Tensor] = {}
        logits = None
        for loss in self.losses:
            which = loss.WhichOneof("loss")
            if which == "softmax_cross_entropy":
                if logits is None:
                    logits = outputs["listwise_logits"] = self.listwise_logits(outputs, batch)
                diagonal = torch.arange(logits.shape[0], device=logits.device)
                value = softmax_cross_entropy(logits, diagonal, batch.sample_weight,
                                              loss.softmax_cross_entropy.label_smoothing)
            else:
                value = binary_cross_entropy(self.pointwise_logits(outputs), batch.labels[self.label_field],
                                             batch.sample_weight)
            terms[which] = loss.weight * value
        if self.dropouts:
            terms["variational_dropout"] = outputs["aux_loss"]
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    @torch.no_grad()
    def update_metrics(self, outputs: dict[str, torch.Tensor], batch: Batch) -> None:
        """Accumulate the configured training metrics over a batch."""
        if not len(self.metrics):
            return
        listwise = outputs.get("listwise_logits")  # set by compute_loss on the same outputs
        pointwise = None
        for metric in self.metrics:
            if metric.name.startswith("in_batch_recall"):
                listwise = self.listwise_logits(outputs, batch) if listwise is None else listwise
                metric.update(listwise, torch.arange(listwise.shape[0], device=listwise.device))
            else:
                pointwise = self.pointwise_logits(outputs) if pointwise is None else pointwise
                metric.update(pointwise, None, batch.labels[self.label_field])

    def compute_metrics(self, reset: bool = True) -> dict[str, float]:
        """{metric name: value} over the batches since the last reset."""
        values = {m.name: m.compute() for m in self.metrics}
        if reset:
            for m in self.metrics:
                m.reset()
        return values

    def feature_ranking(self) -> dict[str, list[tuple[str, float]]]:
        """Per group with variational dropout: (feature, keep probability), best first."""
        return {name: vd.feature_ranking() for name, vd in self.dropouts.items()}
