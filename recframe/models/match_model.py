"""MatchModel: the two-tower base shared by DSSM and DSSMV2."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from recframe.batch import Batch, SparseIds
from recframe.features import Feature
from recframe.losses import binary_cross_entropy, sampled_binary_cross_entropy, softmax_cross_entropy
from recframe.losses.exclusion import excluded_row_candidates, excluded_shared_candidates
from recframe.losses.softmax import MASKED_LOGIT
from recframe.metrics.in_batch import create_metric
from recframe.modules import MLP, EmbeddingGroup, VariationalDropout
from recframe.protos import loss_pb2, model_pb2


class Tower(nn.Module):
    """Concatenated group outputs -> [LayerNorm] -> MLP -> optional Linear projection.

    Input: (B, D_in). Output: (B, output_dim or mlp.hidden_units[-1] or D_in).
    """

    def __init__(self, in_features: int, config: model_pb2.Tower, output_dim: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(in_features) if config.input_layer_norm else None
        self.mlp = MLP(in_features, config.mlp) if config.HasField("mlp") and config.mlp.hidden_units else None
        width = self.mlp.output_dim if self.mlp is not None else in_features
        self.projection = nn.Linear(width, output_dim) if output_dim > 0 else None
        self.output_dim = output_dim if output_dim > 0 else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
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
                    if (groups[name].group_type == model_pb2.DEEP and len(groups[name].feature_names) > 1
                            and not groups[name].HasField("dense_projection")):
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

    def positive_column(self, batch: Batch, outputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B,) column of each row's positive in :meth:`listwise_logits` (shifted by the lower
        ranks' rows when ``outputs`` holds global in-batch candidates)."""
        device = batch.item_key.device if batch.item_key is not None else None
        if self.in_batch_negative:
            offset = outputs["in_batch_candidates"]["offset"] if outputs and "in_batch_candidates" in outputs else 0
            return torch.arange(offset, offset + batch.batch_size, device=device)
        return torch.zeros(batch.batch_size, dtype=torch.long, device=device)

    def listwise_logits(self, outputs: dict[str, torch.Tensor], batch: Batch,
                        logq_correction: bool | None = None) -> torch.Tensor:
        """(B, C) logits of each user against its candidate items.

        Columns: [every row's positive (in-batch negatives; row i's own positive at column
        i) or only the row's own positive (column 0)] + [the S shared sampled negatives] +
        [the row's own per-row negatives, padded]. Each logit is similarity / temperature,
        minus log q of the candidate when ``logq_correction`` (default: the config's).
        Masked (set to MASKED_LOGIT): accidental hits (a candidate other than the positive
        column holding the row's positive item), candidates in the row's
        ``batch.excluded_negatives`` (never the positive column), sampler fallback slots and
        padding.
        """
        user, items = outputs["user_emb"], outputs["item_emb"]
        num_rows, num_shared = batch.batch_size, batch.num_shared
        apply_logq = self.logq_correction if logq_correction is None else logq_correction
        keys, log_q = batch.item_key, batch.item_log_q if apply_logq else None
        sims, cand_keys, cand_log_q, cand_valid = [], [], [], []
        # Per block of columns: its (C,) keys when shared by every row, else None (per-row).
        shared_keys: list[torch.Tensor | None] = []

        def add_shared(rows: slice) -> None:
            sims.append(user @ items[rows].T)
            if keys is not None:
                cand_keys.append(keys[rows].unsqueeze(0).expand(num_rows, -1))
                shared_keys.append(keys[rows])
            if log_q is not None:
                cand_log_q.append(log_q[rows].unsqueeze(0).expand(num_rows, -1))
            cand_valid.append(torch.ones(num_rows, rows.stop - rows.start, dtype=torch.bool, device=user.device))

        def add_per_row(index: torch.Tensor, valid: torch.Tensor) -> None:
            sims.append((user.unsqueeze(1) * items[index]).sum(-1))
            if keys is not None:
                cand_keys.append(keys[index])
                shared_keys.append(None)
            if log_q is not None:
                cand_log_q.append(log_q[index])
            cand_valid.append(valid)

        global_rows = outputs.get("in_batch_candidates")
        if self.in_batch_negative and global_rows is not None:
            # Global in-batch negatives (recframe.distributed): every rank's positives.
            sims.append(user @ global_rows["emb"].to(user.dtype).T)
            if keys is not None:
                cand_keys.append(global_rows["key"].unsqueeze(0).expand(num_rows, -1))
                shared_keys.append(global_rows["key"])
            if log_q is not None:
                cand_log_q.append(global_rows["log_q"].unsqueeze(0).expand(num_rows, -1))
            cand_valid.append(torch.ones(num_rows, global_rows["emb"].shape[0], dtype=torch.bool, device=user.device))
        elif self.in_batch_negative:
            add_shared(slice(0, num_rows))
        else:
            own = torch.arange(num_rows, device=user.device).unsqueeze(1)
            add_per_row(own, torch.ones_like(own, dtype=torch.bool))
        if num_shared:
            add_shared(slice(num_rows, num_rows + num_shared))
        if batch.row_negative_row is not None and batch.row_negative_row.numel():
            add_per_row(*self._per_row_negatives(batch, num_rows + num_shared))

        logits = torch.cat(sims, dim=1) / self.temperature
        if log_q is not None:
            logits = logits - torch.cat(cand_log_q, dim=1).to(logits.dtype)
        positive = self.positive_column(batch, outputs)
        columns = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
        masked = ~torch.cat(cand_valid, dim=1)
        if keys is not None:
            hits = torch.cat(cand_keys, dim=1) == keys[:num_rows].unsqueeze(1)
            if batch.excluded_negatives is not None:
                hits |= self._excluded_candidates(cand_keys, shared_keys, batch.excluded_negatives)
            masked |= hits & (columns != positive.unsqueeze(1))
        return logits.masked_fill(masked, MASKED_LOGIT)

    @staticmethod
    def _excluded_candidates(cand_keys: list[torch.Tensor], shared_keys: list[torch.Tensor | None],
                             exclude: SparseIds) -> torch.Tensor:
        """(B, C) bool, True where a candidate's key is in its row's excluded set; the shared
        column blocks are looked up together (one search per excluded key)."""
        num_rows = cand_keys[0].shape[0]
        shared = [k for k in shared_keys if k is not None]
        if len(shared) == len(shared_keys):  # the common case: no per-row candidates
            return excluded_shared_candidates(torch.cat(shared), exclude, num_rows)
        shared_mask = (excluded_shared_candidates(torch.cat(shared), exclude, num_rows).split(
            [k.numel() for k in shared], dim=1) if shared else [])
        blocks, next_shared = [], iter(shared_mask)
        for block_keys, shared_block in zip(cand_keys, shared_keys):
            blocks.append(next(next_shared) if shared_block is not None
                          else excluded_row_candidates(block_keys, exclude))
        return torch.cat(blocks, dim=1)

    @staticmethod
    def _per_row_negatives(batch: Batch, first_row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) item-row index of each row's per-row negatives (padded) and their validity."""
        owner = batch.row_negative_row
        counts = torch.bincount(owner, minlength=batch.batch_size)
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(owner.numel(), device=owner.device) - starts[owner]
        index = torch.zeros(batch.batch_size, width, dtype=torch.long, device=owner.device)
        valid = torch.zeros(batch.batch_size, width, dtype=torch.bool, device=owner.device)
        index[owner, slot] = first_row + torch.arange(owner.numel(), device=owner.device)
        valid[owner, slot] = batch.row_negative_valid
        return index, valid

    def pointwise_logits(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) similarity / temperature of each row's own user and item."""
        user = outputs["user_emb"]
        return (user * outputs["item_emb"][: user.shape[0]]).sum(dim=-1) / self.temperature

    @staticmethod
    def has_sampled_negatives(batch: Batch) -> bool:
        """Whether the batch carries a negative sampler's items (shared or per-row)."""
        return batch.num_shared > 0 or (batch.row_negative_row is not None and batch.row_negative_row.numel() > 0)

    def sampled_pairs(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) logits (no logQ) and (M,) labels of the unmasked (row, candidate) pairs of
        :meth:`listwise_logits`: 1 at each row's positive column, 0 at its negatives."""
        logits = self.listwise_logits(outputs, batch, logq_correction=False)
        labels = torch.zeros_like(logits)
        labels.scatter_(1, self.positive_column(batch, outputs).unsqueeze(1), 1.0)
        valid = logits > MASKED_LOGIT / 2
        return logits[valid], labels[valid]

    def compute_loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Every configured loss term (weighted), the aux penalty, and their sum as "total".

        binary_cross_entropy: on the label column when the batch has no sampled negatives;
        with sampled negatives, on [the row's positive (label 1) | its negatives (label 0)],
        masked candidates left out (no logQ: the probabilities are not a softmax).
        """
        terms: dict[str, torch.Tensor] = {}
        logits = None
        sampled = self.has_sampled_negatives(batch)
        for loss in self.losses:
            which = loss.WhichOneof("loss")
            if which == "softmax_cross_entropy":
                if logits is None:
                    logits = outputs["listwise_logits"] = self.listwise_logits(outputs, batch)
                value = softmax_cross_entropy(logits, self.positive_column(batch, outputs), batch.sample_weight,
                                              loss.softmax_cross_entropy.label_smoothing)
            elif sampled:
                value = sampled_binary_cross_entropy(self.listwise_logits(outputs, batch, logq_correction=False),
                                                     self.positive_column(batch, outputs), batch.sample_weight)
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
                metric.update(listwise, self.positive_column(batch, outputs))
                continue
            if pointwise is None:
                # With sampled negatives, AUC / accuracy are those of the sampled BCE's
                # (positive | negative) pairs; the label column (if any) is not read.
                pointwise = (self.sampled_pairs(outputs, batch) if self.has_sampled_negatives(batch)
                             else (self.pointwise_logits(outputs), batch.labels[self.label_field]))
            metric.update(pointwise[0], None, pointwise[1])

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
