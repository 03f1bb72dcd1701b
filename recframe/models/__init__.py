"""Models: the tower module, the two-tower base and DSSM / DSSMV2 (MODELS registry)."""

from __future__ import annotations

from typing import Mapping

from recframe.features import Feature
from recframe.models.dssm import DSSM, DSSMV2
from recframe.models.match_model import MatchModel
from recframe.models.tower import Tower
from recframe.protos import model_pb2
from recframe.protoutil import oneof_message
from recframe.registry import MODELS


def model_class_name(model_config: model_pb2.ModelConfig) -> str:
    """``model_class`` if set, else the name of the model message that is set (DSSM, DSSMV2)."""
    return model_config.model_class or type(oneof_message(model_config, "model")).DESCRIPTOR.name


def create_model(model_config: model_pb2.ModelConfig, features: Mapping[str, Feature],
                 label_fields: list[str] | tuple[str, ...] = (), **options) -> MatchModel:
    """Build the registered model (:func:`model_class_name`); ``options`` are keyword
    arguments of :class:`MatchModel` (e.g. ``global_in_batch_negative``)."""
    return MODELS.get(model_class_name(model_config))(model_config, features, label_fields, **options)


__all__ = ["DSSM", "DSSMV2", "MatchModel", "Tower", "create_model", "model_class_name"]
