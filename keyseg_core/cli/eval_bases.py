"""`keyseg eval-bases --config FILE`: prompted IoU of stage-1 bases on held-out generated scenes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "stage 1's ceiling: IoU of its SAM prompted by each object's category, point and box on generated scenes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="the stage-1 config the bases were trained with (model and scene size come from it)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable; values are YAML), e.g. --set output_dir=runs/x")
    parser.add_argument("--checkpoint", default=None,
                        help="<run>/final or <run>/checkpoints/step_N (default: the config's output_dir/final)")
    parser.add_argument("--split", default="test", help="scene split: train, val or test (held-out backgrounds)")
    parser.add_argument("--seed", type=int, default=3,
                        help="scene seed; 3 = the test split of the README's `keyseg generate` (default: %(default)s)")
    parser.add_argument("--scenes", type=int, default=60,
                        help="scenes 0..N-1, every object in them (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.atomic import atomic_write_text
    from keyseg_core.eval.bases import evaluate_bases, format_table
    from keyseg_core.train.stage1.config import BasesConfig

    config = BasesConfig.from_file(args.config, args.overrides)
    checkpoint = Path(args.checkpoint) if args.checkpoint else Path(config.output_dir) / "final"
    report = evaluate_bases(config, checkpoint, args.split, args.seed, args.scenes, progress=not args.no_progress)
    print(format_table(report))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0
