"""Loading real-size weights, timed the way a user loads real ones (`python -m keyseg_core.runtime.load_bench`).

  write   random weights of a named config's shapes (default: LLaVA-7B + SAM ViT-H) on disk, in the
          layout `keyseg convert-lisa` writes: bases/llava (a LlavaForConditionalGeneration folder
          with its tokenizer), bases/sam.safetensors, and the keyseg files (config.json naming the
          bases relative to the folder, trainable weights, meta.json) beside them. Drawn on the
          target device, so writing a 7B takes the disk's time, not a CPU's.
  time    a fresh Python process loads that folder with `Predictor.from_pretrained` (as `keyseg
          predict` does) and segments one 640x480 frame: seconds from process start to the first
          mask (imports included), the load and first-mask split, the host-memory peak (VmHWM, which
          counts the memory-mapped weight files' pages, and the sampled peak of private memory,
          RssAnon: a float32 copy on the host would show there) and the GPU-memory peak.

Why private memory: loading maps the safetensors files, and the kernel counts the mapped pages a
process touched in its RSS although they are the page cache's, shared and reclaimable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_CONFIG = "llava7b-sam-h-random"
WRITE_REPORT = "load_bench_write.json"
QUERY = "Which object in this picture is used for sleeping?"


def write_random_checkpoint(config_name: str, out: Path, device: str, dtype_name: str) -> dict:
    """Write random weights of `config_name`'s shapes to `out` in convert-lisa's layout; returns figures."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlavaForConditionalGeneration, SamModel

    from keyseg_core.atomic import atomic_write_json
    from keyseg_core.config.model import BackboneConfig, KeySegConfig
    from keyseg_core.modeling.build import build_model
    from keyseg_core.modeling.mllm import load_tokenizer, random_llava_config
    from keyseg_core.modeling.sam import spec_config
    from keyseg_core.weights.convert_lisa import resolved, save_beside_bases, staged_folder
    from keyseg_core.weights.precision import resolve_dtype
    from keyseg_core.weights.resolve import named_config

    config = named_config(config_name)
    if config.backbone.llm != "random" or config.sam.weights != "random":
        raise ValueError(f"--config {config_name}: write needs a config of random weights (llm: random, "
                         "sam.weights: random); it gives the shapes")
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another folder")
    torch_device = torch.device(device)
    dtype = resolve_dtype(dtype_name, torch_device)
    start = time.perf_counter()
    tokenizer = load_tokenizer(config.backbone)
    with staged_folder(out) as stage:
        with torch.device(torch_device):
            llava = LlavaForConditionalGeneration._from_config(random_llava_config(config.backbone, tokenizer),
                                                              dtype=dtype)
        llava.save_pretrained(stage / "bases" / "llava")
        tokenizer.save_pretrained(stage / "bases" / "llava")
        del llava
        with torch.device(torch_device):
            sam = SamModel(spec_config(config.sam)).to(dtype)
        # the prompt encoder shares SAM's positional matrix; safetensors wants each tensor once
        save_file({k: v.detach().to("cpu").clone() for k, v in sam.state_dict().items()},
                  str(stage / "bases" / "sam.safetensors"), metadata={"source": f"random {config.sam.size}"})
        del sam
        on_disk = KeySegConfig.from_dict(config.to_dict())
        on_disk.name = f"{config.name}-on-disk"
        defaults = BackboneConfig()  # `mllm` replaces the random LM, tower and tokenizer sources
        on_disk.backbone = dataclasses.replace(
            config.backbone, mllm="./bases/llava", llm=defaults.llm, llm_config={}, vision=defaults.vision,
            vision_config={}, tokenizer=None)
        on_disk.sam.weights = "./bases/sam.safetensors"
        model, _ = build_model(resolved(on_disk, stage), dtype, torch_device)
        model.config = on_disk  # saved with the bases named relative to the folder
        save_beside_bases(model, stage, extra={"layout": f"random weights of {config.name}'s shapes (load benchmark)"})
        del model
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    report = {"config": config_name, "folder": str(out), "bytes": size, "write_s": time.perf_counter() - start,
              "dtype": str(dtype).replace("torch.", "")}
    atomic_write_json(out / WRITE_REPORT, report)  # `time` reports it beside its own figures
    return report


class _PeakSampler(threading.Thread):
    """Largest RssAnon (private host memory) seen, read from /proc/self/status every few ms."""

    def __init__(self, every_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.every_s, self.peak_kb, self._done = every_s, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
            self._done.wait(self.every_s)

    def stop(self) -> float:
        self._done.set()
        self.join()
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
        return self.peak_kb / 1024


def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def load_and_segment(checkpoint: str, device: str, dtype: str) -> dict:
    """In this process: load with the Predictor, segment one frame; stamps are time.time() seconds."""
    sampler = _PeakSampler()
    sampler.start()
    import numpy as np
    import torch

    from keyseg_core.runtime.predictor import Predictor

    imported = time.time()
    predictor = Predictor.from_pretrained(checkpoint, device=device, dtype=dtype, backend="torch")
    loaded = time.time()
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    prediction = predictor.predict(frame, QUERY)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize(predictor.device)
    masked = time.time()
    return {
        "imported_at": imported, "loaded_at": loaded, "first_mask_at": masked,
        "mask_shape": list(prediction.mask.shape),
        "host_private_peak_mb": sampler.stop(),
        "host_rss_peak_mb": _status_kb("VmHWM") / 1024,
        "gpu_peak_mb": (torch.cuda.max_memory_allocated(predictor.device) / 2**20
                        if predictor.device.type == "cuda" else None),
        "device": str(predictor.device), "dtype": str(predictor.dtype).replace("torch.", ""),
    }


def time_fresh_process(checkpoint: str, device: str, dtype: str) -> dict:
    """`load_and_segment` in a fresh interpreter, timed from before its start."""
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "keyseg_core.runtime.load_bench", "time", checkpoint,
                           "--device", device, "--dtype", dtype, "--in-process"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"loading {checkpoint} failed (exit {done.returncode}): "
                           f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "checkpoint": checkpoint,
        "first_mask_s": child["first_mask_at"] - started,
        "start_and_imports_s": child["imported_at"] - started,
        "load_s": child["loaded_at"] - child["imported_at"],
        "first_predict_s": child["first_mask_at"] - child["loaded_at"],
        **{k: v for k, v in child.items() if not k.endswith("_at")},
    }


def print_table(report: dict) -> None:
    load = report.get("load")
    if load:
        print(f"{'first mask from a local disk (s)':<36}{load['first_mask_s']:>10.1f}")
        for key in ("start_and_imports_s", "load_s", "first_predict_s"):
            print(f"  {key:<34}{load[key]:>10.1f}")
        print(f"{'host private-memory peak (MB)':<36}{load['host_private_peak_mb']:>10.0f}")
        print(f"{'host RSS peak, mapped files incl. (MB)':<36}{load['host_rss_peak_mb']:>10.0f}")
        if load.get("gpu_peak_mb") is not None:
            print(f"{'GPU memory peak (MB)':<36}{load['gpu_peak_mb']:>10.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyseg_core.runtime.load_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="random weights of a config's shapes, in convert-lisa's layout")
    write.add_argument("out", type=Path, help="the checkpoint folder to create (must not exist)")
    write.add_argument("--config", default=DEFAULT_CONFIG, help=f"a registry config of random weights ({DEFAULT_CONFIG})")
    write.add_argument("--device", default="cuda", help="where the weights are drawn (cuda)")
    write.add_argument("--dtype", default="bfloat16", help="dtype written (bfloat16)")
    write.add_argument("--json", type=Path, help="write the figures here as JSON")
    timed = sub.add_parser("time", help="load a checkpoint in a fresh process and segment one frame")
    timed.add_argument("checkpoint", help="a keyseg checkpoint folder")
    timed.add_argument("--device", default="cuda")
    timed.add_argument("--dtype", default="bfloat16")
    timed.add_argument("--write-config", metavar="NAME",
                       help="first write random weights of this registry config into CHECKPOINT (as `write`)")
    timed.add_argument("--in-process", action="store_true",
                       help="measure in this process and print its raw JSON line (what `time` runs in a fresh one)")
    timed.add_argument("--json", type=Path, help="write the figures here as JSON (with the write figures, if "
                                                 "the folder's load_bench_write.json exists)")
    args = parser.parse_args(argv)
    from keyseg_core.atomic import save_report

    if args.command == "write":
        report = write_random_checkpoint(args.config, args.out, args.device, args.dtype)
        print(json.dumps(report, indent=2))
        save_report(args.json, report)
        return 0
    if args.in_process:
        print(json.dumps(load_and_segment(args.checkpoint, args.device, args.dtype)))
        return 0
    if args.write_config:
        written = write_random_checkpoint(args.write_config, Path(args.checkpoint), args.device, args.dtype)
        print(f"wrote {written['bytes'] / 1e9:.2f} GB in {written['write_s']:.1f} s to {args.checkpoint}")
    report = {"load": time_fresh_process(args.checkpoint, args.device, args.dtype)}
    written = Path(args.checkpoint) / WRITE_REPORT
    if written.is_file():
        report["write"] = json.loads(written.read_text())
    print_table(report)
    save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
