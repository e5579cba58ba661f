"""`keyseg export`: SAM image encoder and mask head to ONNX (+ manifest.json), checked in onnxruntime.

The LLM stays in torch; see docs/export.md for running the graphs with onnxruntime or building
TensorRT engines from them on the robot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARTS_HELP = "comma-separated parts: sam_encoder (image -> embeddings), decoder (embeddings + prompts -> masks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="checkpoint dir, hub id of one, config:<name> or a config file (as `keyseg predict --model`); "
             "config names build only SAM",
    )
    parser.add_argument("--out", required=True, help="export directory (created; must not exist without --overwrite)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (14-20; default 17)")
    parser.add_argument("--parts", default="sam_encoder,decoder", help=PARTS_HELP)
    parser.add_argument("--fp16", action="store_true",
                        help="float16 weights and tensors (checked against the float32 model)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export directory")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.export import export_sam, parse_parts
    from keyseg_core.export.loading import load_segmenter
    from keyseg_core.export.trtexec import trtexec_commands

    parts = parse_parts(args.parts)
    if Path(args.out).exists() and not args.overwrite:  # fail before loading the model
        raise ValueError(f"{args.out} exists; pass --overwrite to replace it")
    sam, info = load_segmenter(args.model)
    print(f"exporting {', '.join(parts)} of {info['model']} (SAM {info['sam_size']}, {sam.image_size}px, "
          f"opset {args.opset}, {'float16' if args.fp16 else 'float32'}) to {args.out}")
    try:
        manifest = export_sam(sam, args.out, opset=args.opset, parts=parts, fp16=args.fp16,
                              overwrite=args.overwrite, info=info)
    except FileExistsError as exc:  # appeared while exporting; the CLI reports ValueErrors
        raise ValueError(str(exc)) from exc
    print(f"{'graph':<14}{'onnxruntime vs torch: max |diff|':>34}{'tolerance':>12}  checked sizes")
    for name, graph in manifest["graphs"].items():
        c = graph["check"]
        print(f"{name:<14}{c['max_abs_diff']:>34.3g}{c['tolerance']:>12.3g}  {c['sizes']}")
    print(f"wrote {args.out}/manifest.json")
    print("TensorRT engines, built on the robot (untested here: TensorRT is not installable in this environment):")
    for line in trtexec_commands(args.out, fp16=True):
        print(f"  {line}")
    return 0
