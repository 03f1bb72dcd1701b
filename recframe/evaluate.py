"""``python -m recframe.evaluate --pipeline_config X``: full-corpus metrics of a checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys

import pyarrow.parquet as pq

from recframe import distributed
from recframe.evaluation import QueryRanks, evaluate_model
from recframe.pipeline import Pipeline, resolve_device
from recframe.train import USER_ERRORS, error_message
from recframe.files import atomic_write
from recframe.training.checkpoint import load_checkpoint, resolve_checkpoint
from recframe.metrics.table import format_metrics_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recframe.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Full-corpus retrieval metrics (HitRate@K, Recall@K, NDCG@K, MRR) of a checkpoint:\n"
                    "every item of item_input_path is ranked for every row of the evaluation data.\n"
                    "Prints a table and writes the metrics as JSON.",
        epilog="examples:\n"
               "  python -m recframe.evaluate --pipeline_config runs/x/pipeline.config\n"
               "  python -m recframe.evaluate --pipeline_config runs/x/pipeline.config \\\n"
               "      --eval_input_path data/test.parquet --checkpoint_path latest\n"
               "  python -m recframe.evaluate --pipeline_config runs/x/pipeline.config \\\n"
               "      --eval_input_path data/test.parquet --per_query_output runs/x/test_ranks.parquet\n"
               "exit status: 0 done, 2 error in the config, the data or the checkpoint (one line on stderr)",
    )
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
    parser.add_argument("--per_query_output", default=None,
                        help="also write each query's outcome to this Parquet file: row (position in the "
                             "evaluation data), item_key (the target), rank (1-based, 0 = beyond the largest "
                             "K); one process only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.per_query_output and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print("error: --per_query_output: per-query ranks are written by one process; "
              "run recframe.evaluate without torchrun", file=sys.stderr)
        return 2
    try:
        pipeline = Pipeline.from_file(args.pipeline_config, args.edit_config_json)
        config = pipeline.config
        model_dir = args.model_dir or config.model_dir
        path = resolve_checkpoint(model_dir, args.checkpoint_path, args.pipeline_config)
        device = resolve_device(args.device or config.train_config.device)
        device = distributed.setup(device, config.train_config.process_group_timeout_seconds)
        state = load_checkpoint(path, map_location=device)
        if distributed.is_main():
            pipeline.prepare_data()
        distributed.barrier()
        eval_path = args.eval_input_path or config.eval_input_path
        if args.eval_input_path:
            config.eval_input_path = eval_path  # so that a missing file is reported as --eval_input_path
        pipeline.check_input_paths(("eval_input_path", "item_input_path"))
        model = pipeline.build_model().to(device)
        model.load_state_dict(state["model"])
        query_ranks = QueryRanks() if args.per_query_output else None
        metrics = evaluate_model(model, pipeline, device, eval_path, query_ranks)
    except (FileNotFoundError, *USER_ERRORS) as e:
        print(f"error: {error_message(e)}", file=sys.stderr)
        distributed.cleanup()
        return 2
    except distributed.DistributedError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        distributed.cleanup()
        return distributed.EXIT_DISTRIBUTED
    main_rank = distributed.is_main()
    distributed.cleanup()
    if not main_rank:  # every rank computed the same metrics; rank 0 reports them
        return 0
    print(format_metrics_table(metrics, title=f"{eval_path}, checkpoint {path} (step {state['step']})"))
    split = os.path.splitext(os.path.basename(eval_path))[0] or "eval"
    output = args.output or os.path.join(model_dir or ".", f"eval_result_{split}.json")
    record = {"checkpoint": str(path), "step": state["step"], "eval_input_path": eval_path, **metrics}
    atomic_write(output, lambda f: f.write(json.dumps(record, indent=2).encode()))
    print(f"wrote {output}")
    if query_ranks is not None:
        os.makedirs(os.path.dirname(os.path.abspath(args.per_query_output)), exist_ok=True)
        atomic_write(args.per_query_output, lambda f: pq.write_table(query_ranks.table(), f))
        print(f"wrote {args.per_query_output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
