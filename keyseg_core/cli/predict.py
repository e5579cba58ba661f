"""`keyseg predict`: one image + one query -> mask PNG, overlay PNG, keyword and timings."""

from __future__ import annotations

import argparse
from pathlib import Path

from keyseg_core.cli.generated_eval import add_refine_argument


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model/--device/--dtype/--mode, shared by every command that runs a model."""
    parser.add_argument(
        "--model", default=None,
        help="checkpoint dir, hub id of one, config:<name> (tiny, smollm2-sam-b, llava7b-sam-h, "
             "keyseg-tiny, llava7b-sam-h-random) or a config file; default: the shipped, trained KeySeg-Tiny",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="auto: bfloat16 on CUDA (TF32 for what stays float32), float32 on the CPU")
    parser.add_argument("--mode", default="prefill", choices=["prefill", "generate"],
                        help="prefill: one forward pass with the forced answer; generate: free text first")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="torch", choices=["torch", "compile", "onnxruntime", "tensorrt", "auto"],
                        help="backend of the per-frame graphs: torch, compile (torch.compile), onnxruntime or "
                             "tensorrt (exported graphs and engines, built and cached on first use), or auto "
                             "(the first of tensorrt, compile on CUDA, onnxruntime, torch that loads)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="input image file")
    parser.add_argument("--query", required=True, help="what to segment, in natural language")
    parser.add_argument("--out", required=True, help="output directory for mask.png and overlay.png")
    parser.add_argument("--threshold", type=float, default=0.0, help="mask logit threshold (LISA: 0)")
    add_refine_argument(parser)
    add_model_arguments(parser)
    add_backend_argument(parser)


def run(args: argparse.Namespace) -> int:
    from keyseg_core.inference.image_io import load_image, save_png
    from keyseg_core.inference.overlay import overlay
    from keyseg_core.runtime.predictor import Predictor

    image = load_image(args.image)
    predictor = Predictor.from_pretrained(args.model, device=args.device, dtype=args.dtype, mode=args.mode,
                                          mask_threshold=args.threshold, backend=args.backend, refine=args.refine)
    if predictor.untrained:
        print(f"WARNING: model '{predictor.model_name}' has untrained weights; the mask and keyword are not "
              "meaningful until a trained checkpoint is given with --model")
    pred = predictor.predict(image, args.query)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    save_png(out / f"{stem}_mask.png", pred.mask.astype("uint8") * 255)
    save_png(out / f"{stem}_overlay.png", overlay(image, pred.mask, pred.keyword))
    alternatives = ", ".join(f"{c.text} {c.prob:.3f}" for c in pred.keyword_topk)
    print(f"keyword: {pred.keyword} ({pred.keyword_prob:.3f}); alternatives: {alternatives}")
    print(f"answer: {pred.answer}")
    print(f"mask: {int(pred.mask.sum())} px of {pred.mask.size}, confidence {pred.score:.3f}, box {pred.box}")
    print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in pred.timings_ms.items()))
    print(f"wrote {out / f'{stem}_mask.png'} and {out / f'{stem}_overlay.png'}")
    return 0
