"""`keyseg eval-named`: on generated scenes, does the mask land on the object the keyword names?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "on generated scenes: does the mask land on the object its own keyword names (and on the target)?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="keyseg checkpoint dir (<run>/final) or config:<name> (default: the shipped KeySeg-Tiny)")
    parser.add_argument("--split", default="test", help="generated split: train, val or test (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=3, help="scene seed (3: the README's test data)")
    parser.add_argument("--scenes", type=int, default=200, help="scenes 0..N-1, the first query of each (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def run(args: argparse.Namespace) -> int:
    from keyseg_core.atomic import atomic_write_text
    from keyseg_core.cli.eval import resolve_checkpoint
    from keyseg_core.eval.named import named_report
    from keyseg_core.eval.presence import check_generated_split
    from keyseg_core.runtime.predictor import Predictor

    check_generated_split(args.split, args.scenes)  # before the model loads
    checkpoint = resolve_checkpoint(args.checkpoint)  # config:<name> passes through
    predictor = Predictor.from_pretrained(checkpoint, device=args.device)
    report = named_report(predictor, args.seed, args.split, args.scenes, not args.no_progress)
    report["checkpoint"] = checkpoint
    print(f"{checkpoint} on {report['measured_on']}")
    print("| query type | queries | target IoU | keyword names an object | IoU with the named object "
          "| mask mostly on the named object | keyword and mask both the target's |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, s in [("all", report["all"]), *report["by_type"].items()]:
        named_iou = "-" if s["named_iou"] is None else f"{s['named_iou']:.3f}"
        print(f"| {kind} | {s['queries']} | {s['target_iou']:.3f} | {s['keyword_names_an_object']} | {named_iou} "
              f"| {_fraction(s['on_named'])} | {_fraction(s['both_right'])} |")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0
