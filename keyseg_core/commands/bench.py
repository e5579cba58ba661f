"""`keyseg bench`: per-stage latency, end-to-end latency and peak memory of named model configs.

Random weights time the same as trained ones, so real-size configurations (LLaVA-7B + SAM ViT-H)
run without downloads wherever their weights fit in memory; configs that do not fit are reported
as skipped with the memory they would need, never silently dropped.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time

from keyseg_core.atomic import atomic_write_json
from keyseg_core.commands.predict import add_backend_argument

SAM_PARAMS = {"tiny": 0.3e6, "vit_b": 94e6, "vit_l": 312e6, "vit_h": 641e6}
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="config:tiny,config:smollm2-sam-b",
                        help="comma-separated models (as --model of `keyseg predict`)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=sorted(BYTES))
    add_backend_argument(parser)
    parser.add_argument("--image-size", default="640x480", help="WxH of the synthetic input frame")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--query", default="Which object in this room is used for sleeping?")
    parser.add_argument("--json", dest="json_path", default=None, help="also write results to this JSON file")


def estimate_params(config) -> float:
    """Rough parameter count from a config, to decide whether a model fits before building it."""
    from keyseg_core.mllm import RANDOM_LLM_DEFAULTS, RANDOM_VISION_DEFAULTS

    b = config.backbone
    if b.mllm is not None:
        return 7.1e9 + SAM_PARAMS[config.sam.size]  # hub LLaVA: assume the 7B class
    if b.llm == "random":
        t = {**RANDOM_LLM_DEFAULTS, **b.llm_config}
        d, i, n = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
        llm = n * (4 * d * d + 3 * d * i) + 50_000 * d * (1 if t.get("tie_word_embeddings") else 2)
    else:
        llm = 0.14e9  # the offline SmolLM2-135M
    v = {**RANDOM_VISION_DEFAULTS, **b.vision_config}
    vision = v["num_hidden_layers"] * (4 * v["hidden_size"] ** 2 + 2 * v["hidden_size"] * v["intermediate_size"])
    return llm + vision + SAM_PARAMS[config.sam.size]


def available_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_one(name: str, args: argparse.Namespace, image) -> dict:
    import torch

    from keyseg_core.builder import registry_config
    from keyseg_core.predictor import CONFIG_PREFIX, Predictor

    if name.startswith(CONFIG_PREFIX):
        config = registry_config(name[len(CONFIG_PREFIX):])
        need = estimate_params(config) * BYTES[args.dtype] * 1.15
        have = available_bytes(args.device)
        if need > have:
            return {"model": name, "skipped": f"needs ~{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available"}
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(args.device))
    start = time.perf_counter()
    predictor = Predictor.from_pretrained(name, device=args.device, dtype=args.dtype, backend=args.backend)
    load_s = time.perf_counter() - start
    for _ in range(args.warmup):
        predictor.predict(image, args.query)
    runs = [predictor.predict(image, args.query).timings_ms for _ in range(args.iters)]
    stages = {k: [r[k] for r in runs] for k in runs[0]}
    params = sum(p.numel() for p in predictor.model.parameters())
    return {
        "model": name,
        "config": predictor.model.config.name,
        "parameters": params,
        "load_s": round(load_s, 2),
        "stages_ms": {k: {"mean": statistics.fmean(v), "median": statistics.median(v), "min": min(v)}
                      for k, v in stages.items()},
        "peak_memory_mb": round(peak_memory_mb(args.device), 1),
    }


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"


def run(args: argparse.Namespace) -> int:
    import numpy as np

    try:
        w, h = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-size '{args.image_size}': expected WxH, e.g. 640x480") from None
    if args.iters < 1 or args.warmup < 0:
        raise ValueError("--iters must be >= 1 and --warmup >= 0")
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    results = [bench_one(m.strip(), args, image) for m in args.models.split(",") if m.strip()]
    report = {"device": device_name(args.device), "dtype": args.dtype, "backend": args.backend, "image_size": [w, h],
              "iters": args.iters, "warmup": args.warmup, "torch": __import__("torch").__version__, "results": results}
    print_table(report)
    if args.json_path:
        atomic_write_json(args.json_path, report)
        print(f"wrote {args.json_path}")
    return 0


def print_table(report: dict) -> None:
    print(f"device: {report['device']}  dtype: {report['dtype']}  backend: {report['backend']}  frame: {report['image_size'][0]}x"
          f"{report['image_size'][1]}  iters: {report['iters']} (+{report['warmup']} warm-up)")
    for r in report["results"]:
        if "skipped" in r:
            print(f"\n{r['model']}: skipped ({r['skipped']})")
            continue
        print(f"\n{r['model']} ({r['config']}, {r['parameters'] / 1e6:.1f}M params, load {r['load_s']} s, "
              f"peak memory {r['peak_memory_mb']:.0f} MiB)")
        print(f"  {'stage':<14}{'mean ms':>10}{'median':>10}{'min':>10}")
        for stage, s in r["stages_ms"].items():
            print(f"  {stage:<14}{s['mean']:>10.1f}{s['median']:>10.1f}{s['min']:>10.1f}")
    sys.stdout.flush()
