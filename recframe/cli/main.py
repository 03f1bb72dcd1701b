"""``recframe <command>``: the one entry point (also ``python -m recframe``).

Each command lives in ``recframe/cli/<module>.py`` with a ``main(argv) -> int``; this module
only picks it, imported on demand (``recframe --help`` and ``recframe train --help`` import
no torch). The exit codes are :mod:`recframe.cli.common`'s.
"""

from __future__ import annotations

import importlib
import sys

from recframe.cli.common import EXIT_USER_ERROR
from recframe.errors import did_you_mean

#: command -> (module, one line of help), in the order of the workflow.
COMMANDS = {
    "prepare": ("recframe.cli.prepare", "split an interaction log into train/valid/test tables with histories"),
    "init": ("recframe.cli.init", "write a starter config for a prepared folder"),
    "validate": ("recframe.cli.validate", "check a config: every problem at once, with its field path"),
    "train": ("recframe.cli.train", "train and evaluate a pipeline (full-corpus metrics, checkpoints)"),
    "evaluate": ("recframe.cli.evaluate", "full-corpus metrics of a checkpoint"),
    "feature-importance": ("recframe.cli.feature_importance", "rank features by their variational dropout keep "
                                                              "probability; prune to the top K"),
    "export": ("recframe.cli.export", "export the user and item towers for serving"),
    "predict": ("recframe.cli.predict", "embed the rows of a table with an exported tower"),
    "retrieve": ("recframe.cli.retrieve", "top-K items per user from embeddings (exact or faiss)"),
    "serve": ("recframe.cli.serve", "serve top-K retrieval over gRPC (batched, reloadable)"),
    "convert-tzrec": ("recframe.cli.convert_tzrec", "convert a TorchEasyRec DSSM/DSSMV2 config"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: recframe <command> [options]     (recframe <command> --help for its options)", "",
             "Config-driven two-tower retrieval: from an interaction log to a trained, exported model.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "  --version  print the version", "", "example (docs/your_data.md):",
              "  recframe prepare --interactions log.csv --user_col uid --item_col sku --time_col ts --out data/log",
              "  recframe init --data_dir data/log --out log.config",
              "  recframe train --pipeline_config log.config"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] == "--version":
        from recframe import __version__

        print(f"recframe {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}{did_you_mean(name, COMMANDS)}; the commands are "
              f"{', '.join(COMMANDS)} (recframe --help)", file=sys.stderr)
        return EXIT_USER_ERROR
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
