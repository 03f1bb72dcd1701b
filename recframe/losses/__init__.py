"""Losses: registered components over the candidates of a batch (LOSSES registry).

A new loss is a proto message (a member of ``LossConfig.loss``), one file here with a
:class:`~recframe.losses.base.Loss` subclass registered under the message's name, and its
import below.
"""

from recframe.losses.base import LISTWISE, POINTWISE, Loss
from recframe.losses.pointwise import BinaryCrossEntropy, binary_cross_entropy, sampled_binary_cross_entropy
from recframe.losses.softmax import SoftmaxCrossEntropy, softmax_cross_entropy

__all__ = ["BinaryCrossEntropy", "LISTWISE", "Loss", "POINTWISE", "SoftmaxCrossEntropy", "binary_cross_entropy",
           "sampled_binary_cross_entropy", "softmax_cross_entropy"]
