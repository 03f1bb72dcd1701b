"""``python -m recframe.train``: the same as ``recframe train`` (:mod:`recframe.cli.train`)."""

from recframe.cli.shim import run_or_alias

run_or_alias(__name__, "train")
