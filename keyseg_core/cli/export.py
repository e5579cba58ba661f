"""`keyseg export`: the per-frame graphs to ONNX (+ manifest.json), checked in onnxruntime: SAM's
image encoder and mask head, or (--parts vision_tower, on its own) the vision tower + projector.

The LLM stays in torch; see docs/export.md for running the graphs with onnxruntime or TensorRT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARTS_HELP = ("comma-separated parts: sam_encoder (image -> embeddings), decoder (embeddings + prompts -> masks); "
              "or vision_tower alone (CLIP pixels -> visual tokens; builds the whole model)")


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
    from keyseg_core.runtime.export import export_sam, parse_parts
    from keyseg_core.runtime.export.loading import load_segmenter
    from keyseg_core.runtime.export.trtexec import trtexec_commands

    names = [p.strip() for p in args.parts.split(",") if p.strip()]
    vision = "vision_tower" in names
    if vision and len(set(names)) > 1:
        raise ValueError("--parts: vision_tower exports on its own (a directory and manifest of its own); "
                         "run `keyseg export --parts vision_tower` separately")
    parts = () if vision else parse_parts(args.parts)
    if Path(args.out).exists() and not args.overwrite:  # fail before loading the model
        raise ValueError(f"{args.out} exists; pass --overwrite to replace it")
    if vision:
        return _export_vision(args)
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


def _export_vision(args: argparse.Namespace) -> int:
    from keyseg_core.runtime.export.exporter import export_vision
    from keyseg_core.runtime.predictor import Predictor

    predictor = Predictor.from_pretrained(args.model)
    info = {"model": predictor.model_name, "config_name": predictor.model.config.name}
    print(f"exporting vision_tower of {predictor.model_name} (opset {args.opset}, "
          f"{'float16' if args.fp16 else 'float32'}) to {args.out}")
    try:
        manifest = export_vision(predictor.model.llava.model, args.out, opset=args.opset, fp16=args.fp16,
                                 overwrite=args.overwrite, info=info)
    except FileExistsError as exc:
        raise ValueError(str(exc)) from exc
    c = manifest["graphs"]["vision_tower"]["check"]
    print(f"vision_tower: onnxruntime vs torch max |diff| {c['max_abs_diff']:.3g}, tolerance {c['tolerance']:.3g}")
    print(f"wrote {args.out}/manifest.json")
    return 0
