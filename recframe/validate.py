"""``python -m recframe.validate``: the same as ``recframe validate`` (:mod:`recframe.cli.validate`)."""

from recframe.cli.shim import run_or_alias

run_or_alias(__name__, "validate")
