"""Models and the factory that builds one from a ModelConfig."""

from __future__ import annotations

from typing import Mapping

from recframe.features import Feature
from recframe.models.dssm import DSSM, DSSMV2
from recframe.models.match_model import MatchModel, Tower
from recframe.protos import model_pb2
from recframe.registry import MODELS


def create_model(model_config: model_pb2.ModelConfig, features: Mapping[str, Feature],
                 label_fields: list[str] | tuple[str, ...] = ()) -> MatchModel:
    """Build the registered model: ``model_class`` if set, else the class named like the
    model message that is set (DSSM, DSSMV2)."""
    which = model_config.WhichOneof("model")
    name = model_config.model_class or type(getattr(model_config, which)).DESCRIPTOR.name
    return MODELS.get(name)(model_config, features, label_fields)


__all__ = ["DSSM", "DSSMV2", "MatchModel", "Tower", "create_model"]
