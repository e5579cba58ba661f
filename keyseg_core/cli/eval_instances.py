"""`keyseg eval-instances`: "all the <kind>" queries on generated scenes; is the instance count right?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = 'several instances: "all the fruit" queries on generated scenes, instance count and union IoU'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="keyseg checkpoint dir (<run>/final) or config:<name> (default: the shipped KeySeg-Tiny)")
    parser.add_argument("--split", default="test", help="generated split: train, val or test (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=3, help="scene seed (3: the README's test data)")
    parser.add_argument("--scenes", type=int, default=200,
                        help="scenes 0..N-1; those with two or more objects of one kind are asked (default: %(default)s)")
    parser.add_argument("--min-area", type=int, default=20,
                        help="smallest component counted as an instance, in pixels (the node's min_instance_area)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.atomic import atomic_write_text
    from keyseg_core.cli.eval import resolve_checkpoint
    from keyseg_core.eval.instances import instance_report
    from keyseg_core.runtime.predictor import Predictor

    if args.min_area < 1:
        raise ValueError(f"--min-area: {args.min_area} must be >= 1")
    checkpoint = resolve_checkpoint(args.checkpoint)  # config:<name> passes through
    predictor = Predictor.from_pretrained(checkpoint, device=args.device)
    report = instance_report(predictor, args.seed, args.split, args.scenes, args.min_area, not args.no_progress)
    report["checkpoint"] = checkpoint
    print(f"instances of {checkpoint} on {report['measured_on']}: {report['queries']} \"all the <kind>\" queries "
          f"({report['skipped_scenes']} scenes hold no two objects of a kind)")
    print(f"  count right {report['count_accuracy']:.1%} (target 90%), mean count error "
          f"{report['mean_count_error']:+.2f}, union mIoU {report['union_miou']:.3f}")
    for outcome, n in list(report["outcomes"].items())[:6]:
        print(f"  {outcome}: {n}")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0
