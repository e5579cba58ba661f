"""`keyseg attach-detector`: give a codebook checkpoint the category detector of its stage-1 run."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "attach a stage-1 run's vision tower + patch head to a codebook checkpoint as its category detector"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bases", required=True, type=Path,
                        help="the stage-1 run (keyseg pretrain's output_dir: final/ and heads.safetensors)")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="a checkpoint whose fusion has a codebook seeded from that run "
                             "(e.g. runs/keyseg_tiny_v2_codebook/final)")
    parser.add_argument("--overwrite", action="store_true", help="replace a detector the checkpoint already has")
    parser.add_argument("--tiles", type=float, default=0.6,
                        help="the detector also looks at the frame's four corner tiles, each this fraction of its "
                             "height and width, and averages what it sees there with the whole frame (0: the "
                             "frame alone; default %(default)s)")
    parser.add_argument("--calibration-scenes", type=int, default=200,
                        help="fit the visibility calibration on this many generated val scenes (seed 2); "
                             "0: no calibration (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import json

    from keyseg_core.modeling.category_detector import DETECTOR_FILE, CategoryDetector
    from keyseg_core.modeling.geometry_ranker import RANKER_FILE
    from keyseg_core.scenes import load_knowledge

    config_path = args.checkpoint / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"--checkpoint: {args.checkpoint} is not a keyseg checkpoint (no config.json)")
    codebook = json.loads(config_path.read_text()).get("fusion", {}).get("codebook", 0)
    target = args.checkpoint / DETECTOR_FILE
    if target.exists() and not args.overwrite:
        raise ValueError(f"{target} exists; pass --overwrite to replace it")
    names = sorted(load_knowledge().categories)  # stage 1's category order, which the codebook rows follow
    if codebook != len(names):
        raise ValueError(f"--checkpoint: {config_path} has fusion.codebook {codebook}; the detector's "
                         f"{len(names)} categories must be its rows")
    if not (args.tiles == 0 or 0 < args.tiles < 1):
        raise ValueError(f"--tiles: {args.tiles} must be 0 (none) or a fraction in (0, 1)")
    if args.calibration_scenes < 0:
        raise ValueError(f"--calibration-scenes: {args.calibration_scenes} must be >= 0")
    detector = CategoryDetector.from_stage1(args.bases, names)
    detector.tiles = float(args.tiles)
    if args.calibration_scenes:
        fit = _calibrate(detector, json.loads(config_path.read_text()), args)
        print(f"visibility calibration on {fit.measured_on}: a {fit.calibration[0]:.3f}, b {fit.calibration[1]:.3f}; "
              f"AUC {fit.auc:.4f} over {fit.pairs_present} present and {fit.pairs_absent} absent (scene, category) "
              f"pairs; present read >= 0.5: {fit.recall_before:.1%} -> {fit.recall_after:.1%} (absent: "
              f"{fit.absent_after:.2%})")
    detector.save(target)
    print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MB): the tower and patch head of {args.bases}, "
          f"{len(names)} categories, tiles {detector.tiles:g}, calibration {detector.calibration}")
    if (args.checkpoint / RANKER_FILE).is_file():
        print(f"note: {args.checkpoint / RANKER_FILE} was fitted on the previous detector's maps; refit it: "
              f"keyseg fit-ranker --checkpoint {args.checkpoint} (move the old file away first)")
    return 0


def _calibrate(detector, config: dict, args: argparse.Namespace):
    """Fit the detector's visibility calibration, its frames preprocessed as the checkpoint's tower's are."""
    from functools import partial

    from keyseg_core.config.model import KeySegConfig
    from keyseg_core.eval.visibility import calibrate_visibility
    from keyseg_core.modeling.processor import preprocess_clip, preprocess_clip_crop

    size = detector.tower.config.image_size
    crop = KeySegConfig.from_dict(config).backbone.image_preprocess == "crop"
    preprocess = partial(preprocess_clip_crop if crop else preprocess_clip, size=size)  # as inference gives frames
    return calibrate_visibility(detector, preprocess, scenes=args.calibration_scenes, progress=not args.no_progress)
