"""`keyseg eval-instances`: "all the <kind>" queries on generated scenes; is the instance count right?"""

from __future__ import annotations

import argparse

from keyseg_core.cli.generated_eval import (
    add_model_arguments,
    add_output_arguments,
    add_scene_arguments,
    load_predictor,
    write_report,
)

HELP = 'several instances: "all the fruit" queries on generated scenes, instance count and union IoU'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_scene_arguments(parser, "scenes 0..N-1; those with two or more objects of one kind are asked")
    parser.add_argument("--min-area", type=int, default=20,
                        help="smallest component counted as an instance, in pixels (the node's min_instance_area)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from keyseg_core.eval.instances import instance_report

    if args.min_area < 1:
        raise ValueError(f"--min-area: {args.min_area} must be >= 1")
    checkpoint, predictor = load_predictor(args)
    report = instance_report(predictor, args.seed, args.split, args.scenes, args.min_area, not args.no_progress)
    report["checkpoint"] = checkpoint
    print(f"instances of {checkpoint} on {report['measured_on']}: {report['queries']} \"all the <kind>\" queries "
          f"({report['skipped_scenes']} scenes hold no two objects of a kind)")
    print(f"  count right {report['count_accuracy']:.1%} (target 90%), mean count error "
          f"{report['mean_count_error']:+.2f}, union mIoU {report['union_miou']:.3f}")
    for outcome, n in list(report["outcomes"].items())[:6]:
        print(f"  {outcome}: {n}")
    write_report(args.json, report)
    return 0
