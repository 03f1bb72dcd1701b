"""``recframe evaluate --pipeline_config X``: full-corpus metrics of a checkpoint."""

from __future__ import annotations

import argparse
import sys

from recframe.cli.common import add_device_argument, add_pipeline_arguments, pipeline_from_args, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Full-corpus retrieval metrics (HitRate@K, Recall@K, NDCG@K, MRR) of a checkpoint:\n"
                    "every item of item_input_path is ranked for every row of the evaluation data;\n"
                    "with eval_config.pointwise_metrics also the held-out AUC / accuracy of the\n"
                    "labelled rows (pointwise models). Prints a table and writes the metrics as JSON.",
        epilog="examples:\n"
               "  recframe evaluate --pipeline_config runs/x/pipeline.config\n"
               "  recframe evaluate --pipeline_config runs/x/pipeline.config \\\n"
               "      --eval_input_path data/test.parquet --checkpoint_path latest\n"
               "  recframe evaluate --pipeline_config runs/x/pipeline.config \\\n"
               "      --eval_input_path data/test.parquet --per_query_output runs/x/test_ranks.parquet\n"
               "exit status: 0 done, 2 error in the config, the data or the checkpoint (one line on stderr)",
    )
    add_pipeline_arguments(parser, checkpoint=True)
    parser.add_argument("--eval_input_path", default=None,
                        help="data to evaluate (default: the config's eval_input_path)")
    add_device_argument(parser, "train_config.device")
    parser.add_argument("--output", default=None,
                        help="where to write the metrics JSON (default: MODEL_DIR/eval_result_<split>.json)")
    parser.add_argument("--per_query_output", default=None,
                        help="also write each query's outcome to this Parquet file: row (position in the "
                             "evaluation data), item_key (the target), rank (1-based, 0 = beyond the largest "
                             "K); under torchrun, rank 0 writes every query")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.metrics.table import format_metrics_table
        from recframe.recipes.evaluate import evaluate_and_write
        from recframe.training.checkpoint import resolve_checkpoint

        pipeline = pipeline_from_args(args)
        checkpoint = resolve_checkpoint(pipeline.config.model_dir, args.checkpoint_path, args.pipeline_config)
        record = evaluate_and_write(pipeline, checkpoint, eval_path=args.eval_input_path, device_name=args.device,
                                    output=args.output, per_query_output=args.per_query_output)
        if record is None:
            return
        metrics = {k: v for k, v in record.items()
                   if k not in ("checkpoint", "step", "eval_input_path", "output", "per_query_output")}
        print(format_metrics_table(metrics, title=f"{record['eval_input_path']}, checkpoint {checkpoint} "
                                                  f"(step {record['step']})"))
        print(f"wrote {record['output']}")
        if record["per_query_output"]:
            print(f"wrote {record['per_query_output']}")

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
