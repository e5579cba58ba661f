"""`keyseg` command line: one subcommand per module under keyseg_core/cli/.

Each command module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their subcommand runs, so `keyseg --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> (module under keyseg_core.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("predict", "segment one image for one query; write mask and overlay PNGs"),
    "bench": ("bench", "per-stage latency and peak memory of a model config"),
    "info": ("info", "print a model's parameter summary (trainable/total) and config"),
    "convert-sam": ("convert_sam", "convert an original segment-anything checkpoint to safetensors"),
    "convert-lisa": ("convert_lisa", "convert a LISA checkpoint (LISA-7B-v1, LISA-13B-llama2) to a keyseg checkpoint"),
    "prepare-offline": ("prepare_offline", "convert the offline SmolLM2 GGUF into the keyseg cache"),
    "keywords": ("keywords", "build Reason-Seg-Key: extract and normalise a keyword per ReasonSeg training image"),
    "pretrain": ("pretrain", "stage 1: pretrain a small model's vision tower and SAM on generated scenes"),
    "rebuild-bases": ("rebuild_bases", "rebuild a stage-1 run (tower, SAM, category prompts) from a shipped checkpoint"),
    "eval-bases": ("eval_bases", "stage 1's ceiling: IoU of its SAM prompted by each object's category, point and box"),
    "train": ("train", "train KeySeg from a YAML config (resumable; DDP/DeepSpeed/FSDP via accelerate)"),
    "export": ("export", "export SAM's encoder and mask head to ONNX, checked against torch in onnxruntime"),
    "eval": ("eval", "gIoU/cIoU of a checkpoint on ReasonSeg or a refCOCO split; JSON, CSV, worst-case overlays"),
    "eval-presence": ("eval_presence", '"not here": false positives on absent-object queries at a miss rate chosen on val'),
    "eval-instances": ("eval_instances", 'several instances: "all the fruit" queries on generated scenes, instance count and union IoU'),
    "eval-named": ("eval_named", "on generated scenes: does the mask land on the object its own keyword names?"),
    "fit-ranker": ("fit_ranker", "fit the geometry ranker of a gated checkpoint (size and place of its candidates) on generated scenes"),
    "attach-detector": ("attach_detector", "attach a stage-1 run's tower + patch head to a codebook checkpoint as its category detector"),
    "generate": ("generate", "write synthetic reasoning-segmentation scenes (OpenMoji glyphs) as a ReasonSeg split"),
    "demo": ("demo", "keyseg_node live over ROS 2: reasoning queries on generated scenes; table, overlays, contact sheet"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyseg", description="KeySeg reasoning segmentation: model, data, training, export."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # argument definitions live next to the command; import is cheap (no torch at module level)
        importlib.import_module(f"keyseg_core.cli.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0
    module = importlib.import_module(f"keyseg_core.cli.{args._module}")
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"keyseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
