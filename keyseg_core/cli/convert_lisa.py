"""`keyseg convert-lisa`: a released LISA checkpoint (LISA-7B-v1, LISA-13B-llama2-v1) -> keyseg checkpoint."""

from __future__ import annotations

import argparse

DTYPES = ("bfloat16", "float16", "float32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="merged LISA folder (e.g. a local copy of xinlai/LISA-7B-v1): config.json, tokenizer, "
                             "*.safetensors or pytorch_model*.bin")
    parser.add_argument("--out", required=True, help="output folder: a keyseg checkpoint with its bases inside")
    parser.add_argument("--vision-tower", default=None,
                        help="CLIP tower LISA was trained with (default: the one LISA's config.json names, "
                             "openai/clip-vit-large-patch14); a hub id or a local folder")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="dtype of the written weights")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from keyseg_core.weights.convert_lisa import convert_lisa

    if Path(args.out).exists() and not args.overwrite:
        raise ValueError(f"--out {args.out}: exists; pass --overwrite to replace it")

    out, layout = convert_lisa(args.checkpoint, args.out, args.vision_tower, getattr(torch, args.dtype), args.overwrite)
    print(f"converted {layout} -> {out}; segment with: keyseg predict --model {out} --image IMG --query Q "
          "(add --device cuda --dtype bfloat16 on a GPU)")
    return 0
