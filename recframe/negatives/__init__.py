"""Negatives: samplers, item frequencies and logQ, candidate assembly, exclusion.

- :mod:`~recframe.negatives.samplers`, :mod:`~recframe.negatives.edge_samplers`: items drawn
  from an item pool per batch (shared) or per row, registered in
  :data:`recframe.registry.SAMPLERS`;
- :mod:`~recframe.negatives.item_frequency`: training item counts, log q of in-batch candidates;
- :mod:`~recframe.negatives.batching`: the negatives' part of parsing a training batch;
- :mod:`~recframe.negatives.candidates`: the (B, C) candidates of each row, masked for
  accidental hits, excluded items and fallback slots, consumed by losses and metrics;
- :mod:`~recframe.negatives.exclusion`: which candidates a row excludes from its negatives;
- :mod:`~recframe.negatives.global_in_batch`: every rank's positives as candidates (torchrun).
"""

from recframe.negatives import edge_samplers, samplers  # noqa: F401  (register the samplers)
from recframe.negatives.batching import BatchNegatives
from recframe.negatives.candidates import MASKED_LOGIT, Candidates, GlobalInBatch, ScoredBatch, assemble_candidates
from recframe.negatives.item_frequency import ItemFrequency
from recframe.negatives.samplers import BaseSampler, SampledItems, create_sampler

__all__ = ["BaseSampler", "BatchNegatives", "Candidates", "GlobalInBatch", "ItemFrequency", "MASKED_LOGIT",
           "SampledItems", "ScoredBatch", "assemble_candidates", "create_sampler"]
