"""`keyseg eval-named`: on generated scenes, does the mask land on the object the keyword names?"""

from __future__ import annotations

import argparse

from keyseg_core.atomic import save_report
from keyseg_core.cli.generated_eval import add_model_arguments, add_output_arguments, add_scene_arguments, load_predictor

HELP = "on generated scenes: does the mask land on the object its own keyword names (and on the target)?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_scene_arguments(parser, "scenes 0..N-1, the first query of each")
    add_output_arguments(parser)


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def run(args: argparse.Namespace) -> int:
    from keyseg_core.eval.named import named_report
    from keyseg_core.eval.presence import check_generated_split

    check_generated_split(args.split, args.scenes)  # before the model loads
    checkpoint, predictor = load_predictor(args)
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
    save_report(args.json, report)
    return 0
