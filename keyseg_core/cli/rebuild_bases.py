"""`keyseg rebuild-bases`: a stage-1 run rebuilt from a shipped checkpoint (keyseg_core.train.stage1.rebuild)."""

from __future__ import annotations

import argparse

HELP = "rebuild a stage-1 run (tower, SAM, category prompts) from a shipped checkpoint, for stages 2-4 to start from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="the stage-1 recipe the checkpoint's bases came from (e.g. "
                             "recipes/keyseg_tiny_v2_bases.yaml): its model, scenes, absent-prompt rate and seed; "
                             "its output_dir is where the run is written")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set output_dir=runs/rebuilt_bases (repeatable)")
    parser.add_argument("--checkpoint", default=None,
                        help="a gated checkpoint with category_detector.safetensors (default: the shipped KeySeg-Tiny)")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps fitting the category prompt table")
    parser.add_argument("--batch-size", type=int, default=16, help="scenes per step")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate of the prompt table (cosine to 5%%)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.train.stage1.config import BasesConfig
    from keyseg_core.train.stage1.rebuild import rebuild_bases
    from keyseg_core.weights.shipped import shipped_checkpoint

    config = BasesConfig.from_file(args.config, args.overrides)
    checkpoint = args.checkpoint or shipped_checkpoint()
    summary = rebuild_bases(config, checkpoint, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            progress=not args.no_progress)
    print(f"rebuilt {config.output_dir} from {checkpoint} in {summary['seconds']} s (training-scene category IoU "
          f"{summary['train_category_iou_last_10pct']}); measure it with keyseg eval-bases --config {args.config} "
          f"--checkpoint {summary['final']} --scenes 200")
    return 0
