"""``python -m recframe.predict``: the same as ``recframe predict`` (:mod:`recframe.cli.predict`)."""

from recframe.cli.shim import run_or_alias

run_or_alias(__name__, "predict")
