"""`keyseg eval-presence`: "not here" on generated scenes: calibrate on val, measure on test."""

from __future__ import annotations

import argparse

from keyseg_core.atomic import save_report
from keyseg_core.cli.generated_eval import (add_model_arguments, add_output_arguments, add_save_argument,
                                            load_predictor, refuse_to_overwrite)

HELP = ('"not here": false positives on queries about absent objects at a miss rate on present ones; '
        "calibrated on val, measured on test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--scenes", type=int, default=200,
                        help="scenes 0..N-1 of each split, one present and one absent query each (default: %(default)s)")
    parser.add_argument("--calibrate-seed", type=int, default=2,
                        help="seed of the val split the threshold is chosen on (2: the README's val data)")
    parser.add_argument("--test-seed", type=int, default=3,
                        help="seed of the test split it is measured on (3: the README's test data)")
    parser.add_argument("--max-miss", type=float, default=0.05,
                        help="the share of present targets the threshold may call absent on val (default: %(default)s)")
    add_save_argument(parser, "the calibration", "presence.json")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from keyseg_core.eval.presence import collect, presence_report

    if not 0.0 <= args.max_miss < 1.0:
        raise ValueError(f"--max-miss: {args.max_miss} must be in [0, 1)")
    refuse_to_overwrite(args.save)
    checkpoint, predictor = load_predictor(args, presence=False)
    progress = not args.no_progress
    val = collect(predictor, args.calibrate_seed, "val", args.scenes, progress)
    test = collect(predictor, args.test_seed, "test", args.scenes, progress)
    calibration, report = presence_report(val, test, args.max_miss)
    report["checkpoint"] = checkpoint
    print(f"presence of {checkpoint}: signal '{calibration.signal}' > {calibration.threshold:.4g} "
          f"(calibrated on {val.name} at <= {args.max_miss:.0%} misses)")
    print("| signal | val AUC | test AUC | test miss rate | test false positives |")
    print("|---|---:|---:|---:|---:|")
    for name, row in report["signals"].items():
        mark = " (chosen)" if name == calibration.signal else ""
        print(f"| {name}{mark} | {row['calibration_auc']:.3f} | {row['test_auc']:.3f} | "
              f"{row['test_miss_rate']:.1%} | {row['test_false_positive_rate']:.1%} |")
    print(f"present targets' mean IoU on {test.name}: {report['present_target_miou']:.3f}")
    save_report(args.json, report)
    if args.save:
        calibration.save(args.save)
        print(f"wrote {args.save}")
    return 0
