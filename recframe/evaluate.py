"""``python -m recframe.evaluate``: the same as ``recframe evaluate`` (:mod:`recframe.cli.evaluate`)."""

from recframe.cli.shim import run_or_alias

run_or_alias(__name__, "evaluate")
