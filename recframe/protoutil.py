"""Small helpers over protobuf messages used across recframe."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message


def oneof_message(message: Message, oneof: str) -> Message | None:
    """The set member of ``oneof`` in ``message`` (e.g. the ``dssm`` of a ModelConfig), or None."""
    which = message.WhichOneof(oneof)
    return getattr(message, which) if which is not None else None


def oneof_field_name(container: Descriptor, oneof: str, message_name: str) -> str:
    """The field of ``container``'s ``oneof`` whose message type is ``message_name``, e.g.
    ``oneof_field_name(LossConfig.DESCRIPTOR, "loss", "SoftmaxCrossEntropy")`` is
    ``"softmax_cross_entropy"``; ``""`` when none is."""
    for field in container.oneofs_by_name[oneof].fields:
        if field.message_type is not None and field.message_type.name == message_name:
            return field.name
    return ""


__all__ = ["oneof_field_name", "oneof_message"]
