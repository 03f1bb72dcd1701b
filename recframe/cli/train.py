"""``recframe train --pipeline_config X``: train and evaluate a pipeline."""

from __future__ import annotations

import argparse
import sys

from recframe.cli.common import add_device_argument, add_pipeline_arguments, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the two-tower model of a pipeline config, with full-corpus evaluation,\n"
                    "checkpoints and early stopping as configured. Writes to model_dir: pipeline.config,\n"
                    "log.jsonl, checkpoints/, tensorboard/, eval_result.json, loss.png, eval_metrics.png.",
        epilog="examples:\n"
               "  recframe train --pipeline_config examples/dssm_movielens.config\n"
               "  recframe train --pipeline_config X.config --model_dir runs/x \\\n"
               "      --edit_config_json '{\"train_config.num_epochs\": 2}'\n"
               "  recframe train --pipeline_config X.config --continue_train   # resume\n"
               "  torchrun --nproc_per_node=2 -m recframe.train --pipeline_config X.config   # distributed\n"
               "exit status: 0 done, 2 error in the config, the data, model_dir or the environment (one line\n"
               "  on stderr), 3 (under torchrun) another rank died or timed out, 130 interrupted (Ctrl-C; a\n"
               "  checkpoint of the last finished step is saved first)",
    )
    add_pipeline_arguments(parser)
    parser.add_argument("--continue_train", action="store_true",
                        help="resume from model_dir's latest checkpoint (and allow a non-empty model_dir)")
    parser.add_argument("--restart_epoch", action="store_true",
                        help="with --continue_train: when the checkpoint was saved mid-epoch and the batch size, seed "
                             "or training files changed since, restart that epoch from its first batch (otherwise "
                             "refused)")
    add_device_argument(parser, "train_config.device")
    parser.add_argument("--train_input_path", default=None, help="overrides the config's train_input_path")
    parser.add_argument("--eval_input_path", default=None, help="overrides the config's eval_input_path")
    parser.add_argument("--fine_tune_checkpoint", default=None,
                        help="warm start from another run's checkpoint (a file, or a model_dir: its latest); "
                             "overrides train_config.fine_tune_checkpoint")
    return parser


def overrides(args: argparse.Namespace) -> str | None:
    """--edit_config_json with the path flags (TorchEasyRec's names) merged in, as JSON."""
    import json

    try:
        edits = json.loads(args.edit_config_json) if args.edit_config_json else {}
    except ValueError:
        return args.edit_config_json  # the config loader reports it, naming --edit_config_json
    for flag, field in (("train_input_path", "train_input_path"), ("eval_input_path", "eval_input_path"),
                        ("fine_tune_checkpoint", "train_config.fine_tune_checkpoint")):
        if getattr(args, flag) is not None:
            if not isinstance(edits, dict):
                break  # the config loader reports the malformed edits
            edits[field] = getattr(args, flag)
    return json.dumps(edits) if edits or args.edit_config_json else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.config import ConfigError
        from recframe.pipeline import Pipeline
        from recframe.recipes.train import train_and_evaluate

        pipeline = Pipeline.from_file(args.pipeline_config, overrides(args))
        pipeline.print_warnings()
        model_dir = args.model_dir or pipeline.config.model_dir
        if not model_dir:
            raise ConfigError(f"{args.pipeline_config}: model_dir: not set; set it in the config or pass --model_dir")
        pipeline.config.model_dir = model_dir
        train_and_evaluate(pipeline, model_dir, continue_train=args.continue_train, device_name=args.device,
                           restart_epoch=args.restart_epoch)

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
