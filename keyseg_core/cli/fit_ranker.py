"""`keyseg fit-ranker`: fit the geometry ranker of a gated checkpoint on generated train scenes,
measure its keyword top-1 by query type on val, and save it beside the checkpoint's detector."""

from __future__ import annotations

import argparse
import time

from keyseg_core.atomic import save_report
from keyseg_core.cli.generated_eval import add_output_arguments, add_save_argument, refuse_to_overwrite

HELP = ("fit the geometry ranker (size and place of the gated candidates, as the query asks) on generated "
        "train scenes; keyword top-1 by query type on val")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="keyseg checkpoint dir with a category detector (default: the shipped KeySeg-Tiny)")
    parser.add_argument("--train-scenes", type=int, default=500,
                        help="generated train scenes it is fitted on, 5 queries each (default: %(default)s)")
    parser.add_argument("--train-seed", type=int, default=21,
                        help="seed of those scenes (21: not the seed-1 scenes the model was trained on)")
    parser.add_argument("--val-scenes", type=int, default=300,
                        help="val scenes it is measured on (default: %(default)s)")
    parser.add_argument("--val-seed", type=int, default=2, help="seed of the val split (2: the README's val data)")
    parser.add_argument("--weight-decay", type=float, default=3e-2,
                        help="L2 penalty on W (default: %(default)s, chosen on val)")
    parser.add_argument("--plausible", type=float, default=0.2,
                        help="candidates under this share of the best's belief are never moved to "
                             "(default: %(default)s, chosen on val)")
    add_save_argument(parser, "the ranker", "geometry_ranker.safetensors")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from keyseg_core.cli.eval import resolve_checkpoint
    from keyseg_core.eval.ranker_data import collect, keyword_accuracy
    from keyseg_core.modeling.geometry_ranker import fit_ranker
    from keyseg_core.runtime.predictor import Predictor

    if args.weight_decay < 0:
        raise ValueError(f"--weight-decay: {args.weight_decay} must be >= 0")
    if not 0.0 <= args.plausible <= 1.0:
        raise ValueError(f"--plausible: {args.plausible} must be in [0, 1]")
    refuse_to_overwrite(args.save)
    checkpoint = resolve_checkpoint(args.checkpoint)
    predictor = Predictor.from_pretrained(checkpoint, device=args.device, presence=False, refine="none")
    progress = not args.no_progress
    start = time.perf_counter()
    train = collect(predictor, args.train_seed, "train", args.train_scenes, progress=progress)
    val = collect(predictor, args.val_seed, "val", args.val_scenes, progress=progress)
    ranker = fit_ranker(train.hidden, train.probs, train.maps, train.target,
                        top_k=train.probs.shape[1], plausible=args.plausible, weight_decay=args.weight_decay)
    before, after = keyword_accuracy(val, None), keyword_accuracy(val, ranker)
    counts = {t: val.types.count(t) for t in before if t != "all"} | {"all": len(val.types)}
    print(f"geometry ranker of {checkpoint}, fitted on {train.name}; keyword top-1 on {val.name}:")
    print("| query type | queries | gated | + ranker |")
    print("|---|---:|---:|---:|")
    for name in before:
        print(f"| {name} | {counts[name]} | {before[name]:.3f} | {after[name]:.3f} |")
    report = {"checkpoint": checkpoint, "train": train.name, "val": val.name, "weight_decay": args.weight_decay,
              "plausible": args.plausible,
              "keyword_top1_val": {"gated": before, "ranker": after, "queries": counts},
              "seconds": round(time.perf_counter() - start, 1)}
    save_report(args.json, report)
    if args.save:
        ranker.save(args.save, measured={"val": val.name, "keyword_top1": after, "gated": before})
        print(f"wrote {args.save}")
    return 0
