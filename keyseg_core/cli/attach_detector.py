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


def run(args: argparse.Namespace) -> int:
    import json

    from keyseg_core.modeling.category_detector import DETECTOR_FILE, CategoryDetector
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
    detector = CategoryDetector.from_stage1(args.bases, names)
    detector.save(target)
    print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MB): the tower and patch head of {args.bases}, "
          f"{len(names)} categories")
    return 0
