"""``recframe feature-importance --pipeline_config X``: rank each group's features by the keep
probability variational dropout learned; optionally write a config pruned to the top K."""

from __future__ import annotations

import argparse
import os
import sys

from recframe.cli.common import add_pipeline_arguments, pipeline_from_args, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe feature-importance",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank the features of every feature group with variational dropout\n"
                    "(model_config.variational_dropout) by the keep probability 1 - p_drop the checkpoint\n"
                    "learned (embedding_wise: the mean over the feature's dimensions). Writes to OUTPUT_DIR:\n"
                    "feature_importance.csv (group, feature, keep_probability, rank within the group),\n"
                    "feature_importance.png and, with --top_k, pipeline_pruned.config (each such group cut\n"
                    "to its top K features, unused feature_configs removed, model_dir <model_dir>_top<K>).",
        epilog="examples:\n"
               "  recframe feature-importance --pipeline_config examples/dssm_v2_variational_dropout_movielens.config\n"
               "  recframe feature-importance --pipeline_config runs/x/pipeline.config --checkpoint_path latest \\\n"
               "      --output_dir out/importance --top_k 4\n"
               "exit status: 0 done, 2 error in the config (e.g. no variational_dropout), the checkpoint or the\n"
               "output directory (one line on stderr)",
    )
    add_pipeline_arguments(parser, checkpoint=True)
    parser.add_argument("--output_dir", default=None,
                        help="where to write the files (default: MODEL_DIR/feature_importance)")
    parser.add_argument("--top_k", type=int, default=None,
                        help="also write pipeline_pruned.config keeping the K most important features of each group "
                             "with variational dropout")
    parser.add_argument("--clear_variational_dropout", action="store_true",
                        help="leave variational_dropout out of pipeline_pruned.config (TorchEasyRec's flag; needed "
                             "when the top K leave no group of two or more features)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.config import ConfigError
        from recframe.recipes.feature_importance import feature_importance, require_variational_dropout
        from recframe.training.checkpoint import resolve_checkpoint

        pipeline = pipeline_from_args(args)
        require_variational_dropout(pipeline.config, args.pipeline_config)
        output_dir = args.output_dir
        if output_dir is None:
            if not pipeline.config.model_dir:
                raise ConfigError(f"{args.pipeline_config}: model_dir: not set; set it in the config, or pass "
                                  "--model_dir or --output_dir")
            output_dir = os.path.join(pipeline.config.model_dir, "feature_importance")
        checkpoint = resolve_checkpoint(pipeline.config.model_dir, args.checkpoint_path, args.pipeline_config)
        result = feature_importance(pipeline, checkpoint, output_dir, top_k=args.top_k,
                                    clear_variational_dropout=args.clear_variational_dropout)
        print(f"feature importance (keep probability 1 - p_drop), checkpoint {checkpoint} (step {result['step']}):")
        width = max(len(row.feature) for row in result["rows"])
        group = None
        for row in result["rows"]:
            if row.group != group:
                group = row.group
                print(f"  group '{group}':")
            cut = "" if args.top_k is None or row.rank <= args.top_k else "  (pruned)"
            print(f"    {row.rank:>3}  {row.feature:<{width}}  {row.keep_probability:.4f}{cut}")
        for path in (result["csv"], result["png"], result["pruned_config"]):
            if path:
                print(f"wrote {path}")

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
