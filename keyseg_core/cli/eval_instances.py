"""`keyseg eval-instances`: "all the <kind>" queries on generated scenes; is the instance count right?"""

from __future__ import annotations

import argparse

from keyseg_core.atomic import save_report
from keyseg_core.cli.generated_eval import add_model_arguments, add_output_arguments, add_scene_arguments, load_predictor

HELP = 'several instances: "all the fruit" queries on generated scenes, instance count and union IoU'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_scene_arguments(parser, "scenes 0..N-1; those with two or more objects of one kind are asked")
    parser.add_argument("--min-area", type=int, default=20,
                        help="smallest component counted as an instance, in pixels (the node's min_instance_area)")
    parser.add_argument("--mode", choices=("components", "categories"), default="categories",
                        help="how instances are counted (the node's instance_mode): categories needs a model with a "
                             "category detector (default: %(default)s)")
    parser.add_argument("--share", type=float, default=0.1,
                        help="categories mode: the belief share a category needs (the node's category_share; "
                             "default: %(default)s)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from keyseg_core.eval.instances import instance_report

    if args.min_area < 1:
        raise ValueError(f"--min-area: {args.min_area} must be >= 1")
    checkpoint, predictor = load_predictor(args)
    if args.mode == "categories":
        if predictor.reasoner.gate is None:
            raise ValueError(f"--mode categories: {checkpoint} has no category detector (keyseg attach-detector); "
                             "use --mode components")
        predictor.instance_share = args.share
    report = instance_report(predictor, args.seed, args.split, args.scenes, args.min_area, not args.no_progress,
                             args.mode)
    report["checkpoint"] = checkpoint
    print(f"instances of {checkpoint} on {report['measured_on']}: {report['queries']} \"all the <kind>\" queries "
          f"({report['skipped_scenes']} scenes hold no two objects of a kind)")
    print(f"  {args.mode}: count right {report['count_accuracy']:.1%} (target 90%), mean count error "
          f"{report['mean_count_error']:+.2f}, union mIoU {report['union_miou']:.3f}")
    if args.mode == "categories":
        print(f"  the asked categories exactly: {report['categories_right']:.1%}; single-target queries that "
              f"stay one instance: {report['single_target_one_instance']:.1%}")
    for outcome, n in list(report["outcomes"].items())[:6]:
        print(f"  {outcome}: {n}")
    save_report(args.json, report)
    return 0
