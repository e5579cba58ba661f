"""`keyseg eval --checkpoint DIR --dataset reasonseg --split val`: LISA's gIoU/cIoU, per-sample CSV, overlays."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from keyseg_core.cli.generated_eval import add_gate_argument, gate_options

HELP = "gIoU/cIoU of a checkpoint on ReasonSeg or a refCOCO split; JSON, CSV, worst-case overlays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="keyseg checkpoint dir (a training step dir or its model/ subdir, <run>/final), "
                             "a hub id, or config:<name> for an untrained smoke run (default: the shipped KeySeg-Tiny)")
    parser.add_argument("--dataset", required=True,
                        help="reasonseg, refcoco, refcoco+, refcocog, or a full refer name such as 'refcoco|unc|testA'")
    parser.add_argument("--split", default=None, help="val, test (ReasonSeg, refcocog), testA/testB (refcoco, refcoco+)")
    parser.add_argument("--data-root", required=True, help="data root holding reason_seg/ and refer_seg/ (docs/data.md)")
    parser.add_argument("--output", default=None,
                        help="report folder (default: ./eval/<checkpoint label>/<dataset>_<split>, where the label "
                             "of <run>/final is <run> and of <run>/checkpoints/step_N is <run>_step_N)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="auto: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--batch-size", type=int, default=1, help="items per forward pass")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N items (smoke tests)")
    parser.add_argument("--worst", type=int, default=8, help="overlays written for the N lowest-IoU items")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable records (counted in report.json) instead of stopping at the first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_gate_argument(parser)
    parser.add_argument("--no-presence", action="store_true",
                        help="ignore the checkpoint's presence calibration: every query gets a mask, as in the paper")
    parser.add_argument("--robot-checks", type=int, default=0, metavar="SCENES",
                        help="also measure what a robot acts on, on generated test scenes 0..SCENES-1 (seed 3): "
                             "'not here' as the model decides it (false positives on absent-object queries, misses "
                             "on present ones) and 'all the <kind>' instance counts (instance_mode categories, share "
                             "0.1, where the model has a category detector; else components); 0: off (default)")


def resolve_checkpoint(name: str | None) -> str:
    """A training step directory holds the keyseg checkpoint in model/; accept both. None: the shipped model."""
    if name is None:
        from keyseg_core.weights.shipped import shipped_checkpoint

        return str(shipped_checkpoint())
    path = Path(name)
    return str(path / "model") if (path / "model" / "config.json").is_file() else name


def report_label(checkpoint: str) -> str:
    """The report folder's name for a checkpoint argument. Every run ends in `final/` and keeps
    `checkpoints/step_N/`, so those names alone would let two runs overwrite each other's report."""
    path = Path(checkpoint.rstrip("/"))
    if path.name == "model":  # a step directory's model/ subdirectory names the same checkpoint
        path = path.parent
    if path.name == "final" and path.parent.name:
        label = path.parent.name
    elif path.name.startswith("step_") and path.parent.name == "checkpoints" and path.parent.parent.name:
        label = f"{path.parent.parent.name}_{path.name}"
    else:
        label = path.name
    return label.replace(":", "_") or "model"


def run(args: argparse.Namespace) -> int:
    from keyseg_core.eval.segmentation import EvalSettings, eval_name, evaluate, open_eval_dataset
    from keyseg_core.runtime.predictor import Predictor

    for flag in ("batch_size", "worst"):
        if getattr(args, flag) < (1 if flag == "batch_size" else 0):
            raise ValueError(f"--{flag.replace('_', '-')}: {getattr(args, flag)} is out of range")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit: {args.limit} must be >= 1")
    if args.robot_checks < 0:
        raise ValueError(f"--robot-checks: {args.robot_checks} must be >= 0")
    dataset = open_eval_dataset(args.dataset, args.data_root, args.split, args.skip_bad)
    name = eval_name(dataset, args.dataset, args.split)
    checkpoint = resolve_checkpoint(args.checkpoint)
    predictor = Predictor.from_pretrained(checkpoint, device=args.device, dtype=args.dtype,
                                          presence=not args.no_presence, **gate_options(args))
    meta_path = Path(checkpoint) / "meta.json"
    train_steps = json.loads(meta_path.read_text()).get("train_steps") if meta_path.is_file() else None
    if predictor.untrained:
        print("warning: the model is untrained (no train_steps in the checkpoint); numbers are a smoke test only")
    label = report_label(args.checkpoint or checkpoint)
    output = Path(args.output) if args.output else Path("eval") / label / name.replace("|", "_")
    info = {"checkpoint": checkpoint, "train_steps": train_steps, "untrained": predictor.untrained,
            "dataset": args.dataset, "split": getattr(dataset, "split", args.split), "eval_name": name,
            "data_root": str(args.data_root), "device": args.device, "dtype": args.dtype,
            "refine": args.refine}
    settings = EvalSettings(batch_size=args.batch_size, limit=args.limit, skip_bad=args.skip_bad,
                            worst=args.worst, progress=not args.no_progress)
    report = evaluate(predictor, dataset, output, settings, info)
    keyword = (f"  keyword top-1 {report['keyword_top1']:.4f}  top-5 {report['keyword_top5']:.4f}"
               f" ({report['keyword_count']} items with a keyword)") if "keyword_count" in report else ""
    print(f"{name}: gIoU {report['giou']:.4f}  cIoU {report['ciou']:.4f}  over {report['count']} items{keyword}"
          f"  (skipped {report['skipped']['total']})  -> {output / 'report.json'}")
    for kind, row in report.get("by_query_type", {}).items():
        keyword = f"  keyword top-1 {row['keyword_top1']:.4f}" if "keyword_top1" in row else ""
        print(f"  {kind:>10}: gIoU {row['giou']:.4f}  cIoU {row['ciou']:.4f}{keyword}  ({row['count']} items)")
    if args.robot_checks:
        _robot_checks(predictor, args.robot_checks, output / "report.json", report, not args.no_progress)
    return 0


def _robot_checks(predictor, scenes: int, path: Path, report: dict, progress: bool) -> None:
    """'Not here' and instance counts on generated test scenes, printed and added to the report."""
    from keyseg_core.atomic import save_report
    from keyseg_core.eval.instances import instance_report
    from keyseg_core.eval.presence import decision_report

    not_here = decision_report(predictor, 3, "test", scenes, progress)
    mode = "categories" if predictor.reasoner.gate is not None else "components"
    if mode == "categories":
        predictor.instance_share = 0.1
    instances = instance_report(predictor, 3, "test", scenes, progress=progress, mode=mode)
    report["robot_checks"] = {"not_here": not_here, "instances": instances}
    save_report(str(path), report)
    print(f"not here ({not_here['measured_on']}): false positives {not_here['false_positive_rate']:.1%}, "
          f"misses {not_here['miss_rate']:.1%} (targets 5% / 5%)"
          + ("" if not_here["calibration"] else "; the checkpoint has no presence calibration"))
    print(f"all the <kind> ({instances['queries']} queries, {mode}): count right {instances['count_accuracy']:.1%} "
          f"(target 90%), union mIoU {instances['union_miou']:.3f}")
