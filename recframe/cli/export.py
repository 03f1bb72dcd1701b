"""``recframe export --pipeline_config X --export_dir D``: the two towers, apart."""

from __future__ import annotations

import argparse
import sys

from recframe.cli.common import add_device_argument, add_pipeline_arguments, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe export",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export the user tower and the item tower of a checkpoint separately, for serving:\n"
                    "EXPORT_DIR/user/ and EXPORT_DIR/item/, each with tower.pt2 (torch.export),\n"
                    "tower.json (inputs, transforms, output_dim, similarity) and pipeline.config.",
        epilog="examples:\n"
               "  recframe export --pipeline_config runs/x/pipeline.config --export_dir out/export\n"
               "  recframe export --pipeline_config X.config --checkpoint_path latest \\\n"
               "      --export_dir out/export --overwrite\n"
               "exit status: 0 done, 2 error in the config, the checkpoint or the export directory",
    )
    add_pipeline_arguments(parser, checkpoint=True)
    parser.add_argument("--export_dir", required=True, help="output directory (gets user/ and item/)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty export_dir")
    add_device_argument(parser, "cpu", "; the towers are exported with CPU weights and, on a GPU, also "
                                       "checked there (load_tower(path, device) moves them)")
    parser.add_argument("--no_compile", action="store_true",
                        help="skip the AOTInductor package of each tower (faster export: tens of seconds less per "
                             "tower; the CPU then serves the slower torch.export program)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.device import resolve_device
        from recframe.pipeline import Pipeline
        from recframe.recipes.export import check_export_dir, export_checkpoint
        from recframe.training.checkpoint import resolve_checkpoint

        device = resolve_device(args.device or "cpu")
        pipeline = Pipeline.from_file(args.pipeline_config, args.edit_config_json)
        check_export_dir(args.export_dir, args.overwrite)
        model_dir = args.model_dir or pipeline.config.model_dir
        checkpoint = resolve_checkpoint(model_dir, args.checkpoint_path, args.pipeline_config)
        dirs, step = export_checkpoint(pipeline, checkpoint, args.export_dir, overwrite=args.overwrite, device=device,
                                       compile_cpu=not args.no_compile)
        print(f"exported checkpoint {checkpoint} (step {step}): " + ", ".join(str(d) for d in dirs.values()))

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
