"""Time one frame's preprocessing (SAM input + CLIP input) by the PIL path and by the device path,
and how far apart their uint8 images are.

    python -m keyseg_core.runtime.preprocess_bench --device cpu --image-size 640x480 --json pre.json

On CUDA the device path's time includes the upload from the numpy frame and a synchronize.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import numpy as np
import torch

from keyseg_core.atomic import save_report
from keyseg_core.inference.preprocess import FrameUploader, clip_canvas_tensor, clip_pixels, resize_uint8, sam_image
from keyseg_core.modeling.processor import clip_canvas, preprocess_clip
from keyseg_core.modeling.sam import preprocess_sam, resize_for_sam
from keyseg_core.timing import call_times_ms


def _median_ms(fn: Callable[[], object], iters: int, device: torch.device) -> float:
    return statistics.median(call_times_ms(fn, iters, device=device))


def _levels(got: torch.Tensor, want: np.ndarray) -> dict[str, float]:
    diff = np.abs(got.cpu().numpy().astype(int) - want.astype(int))
    return {"max": int(diff.max()), "mean": float(diff.mean()), "share_differing": float((diff > 0).mean())}


def measure(frame: np.ndarray, sam_size: int, clip_size: int, device: torch.device, iters: int) -> dict:
    """Median ms of both paths and the uint8 differences between them, for one frame."""
    upload = FrameUploader(device)

    def pil() -> None:
        preprocess_sam(frame, sam_size).pixels.to(device)
        preprocess_clip(frame, clip_size).to(device)

    def on_device() -> None:
        uploaded = upload(frame)
        sam_image(uploaded, sam_size)
        clip_pixels(uploaded, clip_size)

    uploaded = upload(frame)
    resized = resize_for_sam(frame, sam_size)
    return {
        "pil_ms": _median_ms(pil, iters, device),
        "device_ms": _median_ms(on_device, iters, device),
        "sam_levels": _levels(resize_uint8(uploaded, resized.shape[:2], "bilinear"), resized),
        "clip_levels": _levels(clip_canvas_tensor(uploaded, clip_size), clip_canvas(frame, clip_size)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyseg_core.runtime.preprocess_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", default="640x480", help="WxH of the frame")
    parser.add_argument("--sam-size", type=int, default=1024)
    parser.add_argument("--clip-size", type=int, default=336)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    try:
        w, h = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --image-size '{args.image_size}' is not WxH") from None
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    frames = {"noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)}
    y, x = np.mgrid[0:h, 0:w]
    frames["smooth"] = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1).astype(np.uint8)
    results = {name: measure(f, args.sam_size, args.clip_size, device, args.iters) for name, f in frames.items()}
    report = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "image_size": args.image_size, "sam_size": args.sam_size, "clip_size": args.clip_size,
              "iters": args.iters, "by_frame": results}
    for name, r in results.items():
        print(f"{name:<7} PIL {r['pil_ms']:7.2f} ms  device path {r['device_ms']:7.2f} ms  "
              f"SAM levels max {r['sam_levels']['max']} mean {r['sam_levels']['mean']:.3f}  "
              f"CLIP levels max {r['clip_levels']['max']} mean {r['clip_levels']['mean']:.3f}")
    save_report(args.json_path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
