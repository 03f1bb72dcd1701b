"""``python -m recframe.train --pipeline_config X``: train and evaluate a pipeline."""

from __future__ import annotations

import argparse
import sys

from recframe.config import ConfigError
from recframe.pipeline import Pipeline
from recframe.training.checkpoint import ModelDirNotEmptyError
from recframe.training.trainer import train_and_evaluate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recframe.train", description=__doc__)
    parser.add_argument("--pipeline_config", required=True, help="pipeline config file (.config text format or .json)")
    parser.add_argument("--model_dir", default=None, help="output directory; overrides the config's model_dir")
    parser.add_argument("--edit_config_json", default=None,
                        help='JSON of dotted-path overrides, e.g. \'{"train_config.num_epochs": 2}\'')
    parser.add_argument("--continue_train", action="store_true",
                        help="resume from model_dir's latest checkpoint (and allow a non-empty model_dir)")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: train_config.device)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pipeline = Pipeline.from_file(args.pipeline_config, args.edit_config_json)
        model_dir = args.model_dir or pipeline.config.model_dir
        if not model_dir:
            raise ConfigError(f"{args.pipeline_config}: model_dir: not set; set it in the config or pass --model_dir")
        pipeline.config.model_dir = model_dir
        train_and_evaluate(pipeline, model_dir, continue_train=args.continue_train, device_name=args.device)
    except (ConfigError, ModelDirNotEmptyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
