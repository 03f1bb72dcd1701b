"""``python -m recframe.retrieve``: the same as ``recframe retrieve`` (:mod:`recframe.cli.retrieve`)."""

from recframe.cli.shim import run_or_alias

run_or_alias(__name__, "retrieve")
