"""`keyseg convert-sam`: original segment-anything .pth -> safetensors with SamModel key names."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="sam_vit_{b,l,h}_*.pth from segment-anything")
    parser.add_argument("--out", required=True, help="output .safetensors path")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.pretrained.sam_checkpoint import convert_file

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: must end in .safetensors")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out {out}: exists; pass --overwrite to replace it")
    n = convert_file(args.checkpoint, out)
    print(f"wrote {out} ({n} tensors); use it as sam.weights in a KeySeg config")
    return 0
