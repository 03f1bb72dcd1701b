"""``python -m recframe.evaluate --pipeline_config X``: full-corpus metrics of a checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys

from recframe.config import ConfigError
from recframe.evaluation import evaluate_model
from recframe.pipeline import Pipeline, resolve_device
from recframe.training.checkpoint import CheckpointManager, atomic_write
from recframe.training.run_log import format_metrics_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recframe.evaluate", description=__doc__)
    parser.add_argument("--pipeline_config", required=True, help="pipeline config file")
    parser.add_argument("--checkpoint_path", default="best",
                        help='"best" (default), "latest", or a checkpoint file path')
    parser.add_argument("--model_dir", default=None, help="overrides the config's model_dir")
    parser.add_argument("--eval_input_path", default=None,
                        help="data to evaluate (default: the config's eval_input_path)")
    parser.add_argument("--edit_config_json", default=None, help="JSON of dotted-path overrides")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto")
    parser.add_argument("--output", default=None,
                        help="where to write the metrics JSON (default: MODEL_DIR/eval_result_<split>.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pipeline = Pipeline.from_file(args.pipeline_config, args.edit_config_json)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = pipeline.config
    model_dir = args.model_dir or config.model_dir
    device = resolve_device(args.device or config.train_config.device)
    manager = CheckpointManager(model_dir, config.train_config.keep_checkpoint_max)
    try:
        path = manager.resolve(args.checkpoint_path)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    state = manager.load(path, map_location=device)
    pipeline.prepare_data()
    model = pipeline.build_model().to(device)
    model.load_state_dict(state["model"])
    eval_path = args.eval_input_path or config.eval_input_path
    metrics = evaluate_model(model, pipeline, device, eval_path)
    print(format_metrics_table(metrics, title=f"{eval_path}, checkpoint {path} (step {state['step']})"))
    split = os.path.splitext(os.path.basename(eval_path))[0] or "eval"
    output = args.output or os.path.join(model_dir, f"eval_result_{split}.json")
    record = {"checkpoint": str(path), "step": state["step"], "eval_input_path": eval_path, **metrics}
    atomic_write(output, lambda f: f.write(json.dumps(record, indent=2).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
