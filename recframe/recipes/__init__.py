"""Recipes: what the commands do, as library functions.

- :mod:`~recframe.recipes.train`: the training loop (:func:`train_and_evaluate`);
- :mod:`~recframe.recipes.evaluate`: full-corpus evaluation of a model or a checkpoint;
- :mod:`~recframe.recipes.export`: the two towers as self-contained exports;
- :mod:`~recframe.recipes.predict`: embeddings of a table with an exported tower;
- :mod:`~recframe.recipes.retrieve`: top-K per user from embedding files, with metrics;
- :mod:`~recframe.recipes.feature_importance`: variational dropout's feature ranking and a
  config pruned to the top K.
"""
