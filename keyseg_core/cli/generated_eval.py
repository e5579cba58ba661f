"""What the evaluations on generated scenes (eval-presence, eval-instances, eval-named) share: the
model and output arguments, the range of scenes and loading the predictor (the report is written
by keyseg_core.atomic.save_report)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="keyseg checkpoint dir (<run>/final) or config:<name> (default: the shipped KeySeg-Tiny)")
    add_gate_argument(parser)


def add_gate_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-category-gate", action="store_true",
                        help="ignore the checkpoint's category detector: the fusion's own prompt, as in the paper")
    parser.add_argument("--no-geometry-ranker", action="store_true",
                        help="with the category gate: do not re-rank its candidates by size and place")
    parser.add_argument("--region-threshold", type=float, default=None,
                        help="with the category gate: keep masks where the detector's probability of their category "
                             "is above this (0: masks whole; default: the predictor's, 0.02)")
    add_refine_argument(parser)


def add_refine_argument(parser: argparse.ArgumentParser) -> None:
    from keyseg_core.inference.refine import REFINE_METHODS

    parser.add_argument("--refine", choices=REFINE_METHODS, default="grabcut",
                        help="reshape each mask to the frame's colour edges (grabcut, default) or keep SAM's (none)")


def gate_options(args: argparse.Namespace) -> dict:
    """Predictor.from_pretrained options of `add_gate_argument`'s flags."""
    options = {"category_gate": not args.no_category_gate, "refine": args.refine,
               "geometry_ranker": not args.no_geometry_ranker}
    if args.region_threshold is not None:
        options["region_threshold"] = args.region_threshold
    return options


def add_scene_arguments(parser: argparse.ArgumentParser, scenes_help: str) -> None:
    parser.add_argument("--split", default="test", help="generated split: train, val or test (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=3, help="scene seed (3: the README's test data)")
    parser.add_argument("--scenes", type=int, default=200, help=f"{scenes_help} (default: %(default)s)")


def add_save_argument(parser: argparse.ArgumentParser, writes: str, file: str) -> None:
    """`--save PATH`: where a fitted file (`writes`, saved in a checkpoint dir as `file`) goes."""
    parser.add_argument("--save", default=None, metavar="PATH",
                        help=f"write {writes} here (a checkpoint dir's {file} is what the predictor applies); "
                             "an existing file is never overwritten")


def refuse_to_overwrite(save: str | None) -> None:
    """Nothing the user saved is overwritten: an existing `--save` path is refused before any work."""
    if save and Path(save).exists():
        raise ValueError(f"--save: {save} exists; move it away first (nothing is overwritten)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_predictor(args: argparse.Namespace, **options):
    """(checkpoint name, Predictor) of `--checkpoint` on `--device`; `options` go to from_pretrained."""
    from keyseg_core.cli.eval import resolve_checkpoint
    from keyseg_core.runtime.predictor import Predictor

    checkpoint = resolve_checkpoint(args.checkpoint)  # config:<name> passes through
    options = gate_options(args) | options
    return checkpoint, Predictor.from_pretrained(checkpoint, device=args.device, **options)

