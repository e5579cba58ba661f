"""`keyseg bench`: per-stage latency, frames per second and peak memory of named models and backends,
the full pipeline against streaming, in one run and one JSON.

For each model and backend it measures, on the same frames (a generated test scene resized to
--image-size, with its own query unless --query is given), everything the loaded predictor runs
(category gate, presence, mask region, `--refine`):
  full        the whole model on every frame (`Predictor.predict`): per-stage latency, fps;
  streaming   one reasoning pass, then SAM only on every frame (`StreamingSegmenter`): per-stage
              latency, fps, and the ratio streaming fps / full fps;
  prefill vs generate   one query's reasoning with the forced answer (one prefill) against generating
              the answer token by token (`--generate-tokens` at most), and their ratio;
  cached frame          a second query on a frame already encoded (`set_image`) against the first;
  video       (--video N) a generated moving sequence with known masks (keyseg_core.scenes): mean IoU
              against the ground truth of full passes and of streaming, streaming's IoU against the
              full passes, and both frame rates.
Random weights time the same as trained ones up to the content-dependent postprocess, so real-size configurations (LLaVA-7B + SAM ViT-H) run
without downloads wherever they fit in memory; configs that do not fit are reported as skipped with
the memory they would need, never silently dropped. Ratios measured in one run hold on any machine;
absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time

from keyseg_core.atomic import save_report
from keyseg_core.cli.generated_eval import add_refine_argument

SAM_PARAMS = {"tiny": 0.3e6, "vit_b": 94e6, "vit_l": 312e6, "vit_h": 641e6}
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
BACKEND_NAMES = ("torch", "compile", "onnxruntime", "tensorrt", "auto")
SHIPPED = "shipped"  # --models name of the default model
BENCH_SCENE = 0  # the timed frame: this generated test scene (seed 3, as the README's evaluation)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=f"{SHIPPED},config:tiny",
                        help=f"comma-separated models (as --model of `keyseg predict`; '{SHIPPED}': the shipped "
                             "KeySeg-Tiny)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", *sorted(BYTES)],
                        help="auto: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--backend", "--backends", dest="backends", default="torch",
                        help=f"comma-separated backends to compare: {', '.join(BACKEND_NAMES)}")
    parser.add_argument("--image-size", default="640x480", help="WxH of the frames")
    parser.add_argument("--iters", type=int, default=5, help="timed full-pipeline frames per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--frames", type=int, default=30, help="timed streaming frames per model")
    parser.add_argument("--generate-tokens", type=int, default=32,
                        help="most tokens generated in the prefill-vs-generate comparison (0: skip it)")
    parser.add_argument("--video", type=int, default=0,
                        help="frames of a generated moving sequence for mean IoU and fps, full vs streaming "
                             "(0: skip)")
    parser.add_argument("--sequences", type=int, default=1,
                        help="generated sequences (seeds 0..N-1, one query each) that --video averages over")
    parser.add_argument("--query", default=None,
                        help="query of the timed frame (default: the generated scene's own query, about an object in view)")
    add_refine_argument(parser)
    parser.add_argument("--no-base-check", action="store_true",
                        help="load checkpoints without checking their frozen bases against the saved fingerprint: "
                             "only for timing with a transport copy of the bases (scripts/bench_gpu.sh's "
                             "KeySeg-Tiny, whose token table is carried at 4 bits)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write results to this JSON file")


def estimate_params(config) -> float:
    """Rough parameter count from a config, to decide whether a model fits before building it."""
    from keyseg_core.modeling.mllm import RANDOM_LLM_DEFAULTS, RANDOM_VISION_DEFAULTS

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


def peak_host_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_gpu_mb(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return None


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values)}


def _stages(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: _summary([r.get(k, 0.0) for r in runs]) for k in runs[0]}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _fps(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _iou(a, b) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _skip_reason(name: str, args: argparse.Namespace) -> str | None:
    import torch

    from keyseg_core.weights.precision import resolve_dtype
    from keyseg_core.weights.resolve import CONFIG_PREFIX, untrained_config

    if not name.startswith(CONFIG_PREFIX):
        return None
    config = untrained_config(name)
    dtype = str(resolve_dtype(args.dtype, torch.device(args.device))).replace("torch.", "")
    need = estimate_params(config) * BYTES[dtype] * 1.15
    have = available_bytes(args.device)
    return f"needs ~{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available" if need > have else None


def bench_model(name: str, backends: list[str], args: argparse.Namespace, frame, video) -> list[dict]:
    """Every measurement of one model on each backend; the model is loaded once and each backend is
    put in charge of its per-frame graphs in turn."""
    import torch

    from keyseg_core.runtime.backends import use_backend
    from keyseg_core.runtime.predictor import Predictor

    skipped = _skip_reason(name, args)
    if skipped:
        return [{"model": name, "backend": b, "skipped": skipped} for b in backends]
    device = torch.device(args.device)
    start = time.perf_counter()
    base = Predictor.from_pretrained(None if name == SHIPPED else name, device=args.device, dtype=args.dtype,
                                     check_bases=not args.no_base_check, refine=args.refine)
    load_s = time.perf_counter() - start
    model = base.model
    parameters = sum(p.numel() for p in model.parameters())
    rows = []
    for backend in backends:
        model.sam.to(device)  # the previous backend's predictor may have parked it on the host
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        try:
            choice = use_backend(model, backend, device)
        except (RuntimeError, ValueError) as exc:  # a backend that cannot run here is a row, not a crash
            rows.append({"model": name, "backend": backend, "skipped": str(exc)})
            continue
        # everything the loaded predictor runs (category gate, presence, mask region, refinement), on this backend
        predictor = Predictor(model, base.processor, model_name=name, untrained=base.untrained, backend=choice,
                              gate=base.reasoner.gate, presence=base.presence,
                              region_threshold=base.region_threshold, refiner=base.refiner)
        rows.append(bench_one(predictor, args, frame, video) | {
            "parameters": parameters, "load_s": round(load_s, 2),
            "backend_load_s": round(time.perf_counter() - start, 2)})
    return rows


def bench_one(predictor, args: argparse.Namespace, frame, video) -> dict:
    """Full pipeline, streaming, cached frame, prefill vs generate and video on one predictor."""
    import numpy as np

    from keyseg_core.inference.stream import StreamingSegmenter
    from keyseg_core.runtime.predictor import Predictor

    name = predictor.model_name
    result = {"model": name, "config": predictor.model.config.name, "backend": predictor.backend.name,
              "backend_reason": predictor.backend.describe(), "dtype": str(predictor.dtype).replace("torch.", ""),
              "refine": "none" if predictor.refiner is None else "grabcut"}
    query = args.query

    # full pipeline on every frame
    for _ in range(args.warmup):
        predictor.predict(frame, query)
    runs = []
    t0 = time.perf_counter()
    for _ in range(args.iters):
        runs.append(predictor.predict(frame, query).timings_ms)
    _sync(args.device)
    full_fps = _fps(args.iters, time.perf_counter() - t0)
    result["full"] = {"stages_ms": _stages(runs), "fps": full_fps}

    # streaming: one reasoning, then SAM only
    stream = StreamingSegmenter(predictor)
    stream.set_query(query)
    reasoning = stream.step(frame).reasoning  # the reasoning pass (and its frame's mask)
    for _ in range(args.warmup):
        stream.step(frame)
    frames = []
    t0 = time.perf_counter()
    for _ in range(args.frames):
        frames.append(stream.step(frame).prediction.timings_ms)
    _sync(args.device)
    stream_fps = _fps(args.frames, time.perf_counter() - t0)
    result["streaming"] = {"stages_ms": _stages(frames), "fps": stream_fps,
                           "reasoning_ms": reasoning.timings_ms.get("total", 0.0)}

    # a second query on a frame already encoded, against the first
    firsts, seconds = [], []
    for i in range(max(args.iters, 1)):
        cached = predictor.cache_frame(frame)
        t0 = time.perf_counter()
        predictor.predict_queries([query], cached)
        _sync(args.device)
        t1 = time.perf_counter()
        predictor.predict_queries([f"{query} (second question {i})"], cached)
        _sync(args.device)
        firsts.append((t1 - t0) * 1e3)
        seconds.append((time.perf_counter() - t1) * 1e3)
    ratios = {"streaming_over_full_fps": stream_fps / full_fps,
              "cached_frame": {"first_query_ms": statistics.median(firsts),
                               "second_query_ms": statistics.median(seconds),
                               "first_over_second": statistics.median(firsts) / statistics.median(seconds)}}

    # prefill (forced answer) against token-by-token generation, per query
    if args.generate_tokens > 0:
        generator = Predictor(predictor.model, predictor.processor, model_name=name, untrained=predictor.untrained,
                              mode="generate", max_new_tokens=args.generate_tokens, backend=predictor.backend)
        generator.reason(frame, query)  # warm-up
        prefill = [predictor.reason(frame, query).timings_ms["total"] for _ in range(max(args.iters, 1))]
        steps0 = generator.reasoner.steps
        generated = [generator.reason(frame, query).timings_ms for _ in range(max(args.iters // 2, 1))]
        tokens = (generator.reasoner.steps - steps0) / len(generated)
        gen_ms = statistics.median(g["total"] for g in generated)
        per_token = statistics.median(g.get("generate", 0.0) for g in generated) / max(tokens, 1)
        ratios["prefill_vs_generate"] = {
            "prefill_ms": statistics.median(prefill), "generate_ms": gen_ms, "tokens_generated": tokens,
            "ms_per_generated_token": per_token, "generate_over_prefill": gen_ms / statistics.median(prefill)}
    result["ratios"] = ratios

    # quality and speed on generated moving sequences: streaming against a full pass on every frame
    if video:
        full_ious, stream_ious, agree, full_s, stream_s, frames, reasonings = [], [], [], 0.0, 0.0, 0, 0
        for seq in video:
            vq = seq.texts[0]
            full_masks, t0 = [], time.perf_counter()
            for f in seq.frames:
                full_masks.append(predictor.predict(f, vq).mask)
            _sync(args.device)
            full_s += time.perf_counter() - t0
            stream = StreamingSegmenter(predictor)
            stream.set_query(vq)
            stream_masks, t0 = [], time.perf_counter()
            for i, f in enumerate(seq.frames):
                stream_masks.append(stream.step(f, now=i / 30).prediction.mask)
            _sync(args.device)
            stream_s += time.perf_counter() - t0
            truth = [m > 0 for m in seq.masks]
            full_ious += [_iou(m, g) for m, g in zip(full_masks, truth)]
            stream_ious += [_iou(m, g) for m, g in zip(stream_masks, truth)]
            agree += [_iou(s_, f) for s_, f in zip(stream_masks, full_masks)]
            frames, reasonings = frames + len(seq), reasonings + stream.reasonings
        result["video"] = {
            "sequences": len(video), "frames": frames, "queries": [seq.texts[0] for seq in video],
            "reasonings": reasonings,
            "full": {"miou_gt": float(np.mean(full_ious)), "fps": _fps(frames, full_s)},
            "streaming": {"miou_gt": float(np.mean(stream_ious)), "miou_vs_full": float(np.mean(agree)),
                          "fps": _fps(frames, stream_s)},
        }
    result["peak_host_mb"] = round(peak_host_mb(), 1)
    gpu = peak_gpu_mb(args.device)
    if gpu is not None:
        result["peak_gpu_mb"] = round(gpu, 1)
    result["untrained"] = predictor.untrained
    return result


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"


def run(args: argparse.Namespace) -> int:
    import torch

    try:
        w, h = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-size '{args.image_size}': expected WxH, e.g. 640x480") from None
    if (args.iters < 1 or args.warmup < 0 or args.frames < 1 or args.video < 0 or args.generate_tokens < 0
            or args.sequences < 1):
        raise ValueError("--iters, --frames and --sequences must be >= 1; --warmup, --video and --generate-tokens >= 0")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKEND_NAMES]
    if unknown or not backends:
        raise ValueError(f"--backend '{args.backends}': choose from {', '.join(BACKEND_NAMES)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    import cv2

    from keyseg_core.scenes import generate_sequence, make_sample

    # a generated test scene with its target in view: presence, the mask region and the refinement do
    # their work (on a frame of noise the mask is empty and they cost nothing)
    sample = make_sample(3, "test", BENCH_SCENE)
    frame = cv2.resize(sample.scene.image, (w, h), interpolation=cv2.INTER_LINEAR)
    args.query = args.query or sample.queries[0].text
    video = []
    if args.video:

        video = [generate_sequence(args.video, seed=seed, size=(w, h)) for seed in range(args.sequences)]
    results = [row for m in models for row in bench_model(m, backends, args, frame, video)]
    report = {"device": device_name(args.device), "dtype": args.dtype, "image_size": [w, h], "iters": args.iters,
              "frame": f"generated test scene {BENCH_SCENE} (seed 3)", "query": args.query,
              "warmup": args.warmup, "frames": args.frames, "video_frames": args.video, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "results": results}
    print_table(report)
    save_report(args.json_path, report)
    return 0


def print_table(report: dict) -> None:
    print(f"device: {report['device']}  dtype: {report['dtype']}  frame: {report['image_size'][0]}x"
          f"{report['image_size'][1]}  full: {report['iters']} frames (+{report['warmup']} warm-up)  streaming: "
          f"{report['frames']} frames")
    rows = []
    for r in report["results"]:
        if "skipped" in r:
            print(f"\n{r['model']} [{r['backend']}]: skipped ({r['skipped']})")
            continue
        mem = f"peak host {r['peak_host_mb']:.0f} MiB" + (f", GPU {r['peak_gpu_mb']:.0f} MiB" if "peak_gpu_mb" in r else "")
        print(f"\n{r['model']} [{r['backend_reason']}] ({r['config']}, {r['dtype']}, {r['parameters'] / 1e6:.1f}M "
              f"params, load {r['load_s']} s, {mem})")
        full, stream = r["full"]["stages_ms"], r["streaming"]["stages_ms"]
        print(f"  {'stage (median ms)':<18}{'full':>10}{'streaming':>11}")
        for stage in full:
            print(f"  {stage:<18}{full[stage]['median']:>10.1f}{stream.get(stage, {'median': 0.0})['median']:>11.1f}")
        rows.append(r)
    if not rows:
        return
    print(f"\n{'model':<24}{'backend':<12}{'full fps':>9}{'stream fps':>11}{'ratio':>7}{'2nd query':>10}"
          f"{'gen/prefill':>12}{'ms/token':>9}{'video mIoU full/stream/agree':>30}")
    for r in rows:
        ratios = r["ratios"]
        pg = ratios.get("prefill_vs_generate")
        gen = f"{pg['generate_over_prefill']:.1f}x" if pg else "-"
        per_token = f"{pg['ms_per_generated_token']:.1f}" if pg else "-"
        v = r.get("video")
        video = (f"{v['full']['miou_gt']:.3f}/{v['streaming']['miou_gt']:.3f}/{v['streaming']['miou_vs_full']:.3f}"
                 if v else "-")
        model = r["model"] if len(r["model"]) < 24 else "..." + r["model"][-20:]
        print(f"{model:<24}{r['backend']:<12}{r['full']['fps']:>9.1f}{r['streaming']['fps']:>11.1f}"
              f"{ratios['streaming_over_full_fps']:>6.1f}x{ratios['cached_frame']['first_over_second']:>9.1f}x"
              f"{gen:>12}{per_token:>9}{video:>30}")
        if v:
            print(f"{'':<24}video: {v['sequences']} sequence(s), {v['frames']} frames, full {v['full']['fps']:.1f} fps, "
                  f"streaming {v['streaming']['fps']:.1f} fps, {v['reasonings']} reasoning pass(es)")
    sys.stdout.flush()
