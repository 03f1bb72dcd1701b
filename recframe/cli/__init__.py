"""The command line: one module per command, each parsing its arguments and calling one
library function (:mod:`recframe.recipes`); :mod:`recframe.cli.common` owns the exit codes."""
