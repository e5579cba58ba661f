"""Latency of SAM's parts in torch and in onnxruntime, on the same weights, inputs and thread count.

    python -m keyseg_core.runtime.ort_bench --models config:tiny,config:smollm2-sam-b --json bench.json

Only SAM is built (config names need no LLM); graphs come from the export cache (exported on first
use). Inputs are one image (batch 1) and one prompt, the robot's case.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any

from keyseg_core.atomic import save_report
from keyseg_core.timing import call_times_ms


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m keyseg_core.runtime.ort_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="config:tiny,config:smollm2-sam-b",
                        help="comma-separated models (as `keyseg export --model`)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per part and backend")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both torch and onnxruntime (default: torch's current count)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    return parser


def _time(fn: Callable[[], Any], iters: int, warmup: int) -> dict[str, float]:
    runs = call_times_ms(fn, iters, warmup)
    return {"mean": statistics.fmean(runs), "median": statistics.median(runs), "min": min(runs)}


def bench_model(name: str, iters: int, warmup: int, threads: int) -> list[dict[str, Any]]:
    """Rows (one per part) of torch vs onnxruntime latency for one model's SAM."""
    import torch

    from keyseg_core.runtime.backends.onnxruntime_sam import OrtSamSegmenter, cached_export
    from keyseg_core.runtime.export.loading import load_segmenter
    from keyseg_core.runtime.ort import CPU

    sam, info = load_segmenter(name)
    ort_sam = OrtSamSegmenter(cached_export(sam), [CPU], threads=threads)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, sam.image_size, sam.image_size, generator=gen)
    prompts = torch.randn(1, sam.prompt_dim, generator=gen)
    rows = []
    with torch.inference_mode():
        embedding = sam.encode(pixels)
        calls = {
            "sam_encoder": (lambda: sam.encode(pixels), lambda: ort_sam.encode(pixels)),
            "decoder": (lambda: sam.decode(embedding, prompts), lambda: ort_sam.decode(embedding, prompts)),
        }
        for part, (torch_fn, ort_fn) in calls.items():
            want, got = torch_fn(), ort_fn()
            want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
            diff = max(float((w - g).abs().max()) for w, g in zip(want, got))
            rows.append({"model": name, "sam_size": info["sam_size"], "image_size": sam.image_size, "part": part,
                         "torch_ms": _time(torch_fn, iters, warmup), "onnxruntime_ms": _time(ort_fn, iters, warmup),
                         "max_abs_diff": diff})
    return rows


def print_table(report: dict[str, Any]) -> None:
    print(f"device: {report['device']}, {report['threads']} threads; torch {report['torch']}, "
          f"onnxruntime {report['onnxruntime']}; batch 1, 1 prompt; median of {report['iters']} "
          f"(+{report['warmup']} warm-up)")
    print(f"{'model':<22}{'SAM':<7}{'part':<13}{'torch ms':>10}{'(min)':>10}{'ort ms':>10}{'(min)':>10}"
          f"{'ort/torch':>11}{'max|diff|':>11}")
    for r in report["results"]:
        t, o = r["torch_ms"], r["onnxruntime_ms"]
        print(f"{r['model']:<22}{r['sam_size']:<7}{r['part']:<13}{t['median']:>10.1f}{t['min']:>10.1f}"
              f"{o['median']:>10.1f}{o['min']:>10.1f}{o['median'] / t['median']:>10.2f}x{r['max_abs_diff']:>11.2g}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit("error: --iters must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise SystemExit("error: --threads must be >= 1")
    import onnxruntime
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise SystemExit("error: --models names no model")
    results = [row for m in models for row in bench_model(m, args.iters, args.warmup, threads)]
    report = {"device": f"{platform.processor() or platform.machine()} CPU", "threads": threads,
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "iters": args.iters,
              "warmup": args.warmup, "results": results}
    print_table(report)
    save_report(args.json_path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
