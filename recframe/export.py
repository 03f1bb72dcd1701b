"""``python -m recframe.export``: the same as ``recframe export`` (:mod:`recframe.cli.export`)."""

from recframe.cli.shim import run_or_alias

run_or_alias(__name__, "export")
