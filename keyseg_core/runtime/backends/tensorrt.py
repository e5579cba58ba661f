"""The `tensorrt` backend: TensorRT engines for the per-frame graphs, built from keyseg's own ONNX
exports with TensorRT's Python API and cached.

Thin on purpose and close to NVIDIA's documented API (TensorRT 10/11: named I/O tensors,
`execute_async_v3`, strongly typed networks), because TensorRT cannot be installed where keyseg is
developed and tested: everything around it (cache keys, invalidation, binding by name, fallback) is
plain Python and tested without TensorRT; the calls into `tensorrt` themselves have not run here.

Engines: one per graph (vision tower, SAM image encoder, prompt-to-mask decoder), built from the
ONNX export of the same weights (float16 graphs for fp16 engines: TensorRT 11 has no FP16 builder
flag, precision comes from the graph), one optimisation profile per graph (min 1, opt 1, max
`MAX_SIZES`), a timing cache shared by all builds. Each engine is cached under
`<keyseg cache>/trt/<key>/` with a meta.json; the key hashes the graph, the TensorRT version, the GPU
name and the precision, so another GPU, TensorRT version or export builds a new engine. An entry whose
meta.json does not match what is expected, or whose engine file is truncated or does not
deserialise, is rebuilt. fp16 engines are compared with the torch float32 graph at build time and
replaced by a float32 engine when they are not accurate enough.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from keyseg_core.modeling.sam import ImageByImageDecoding
from keyseg_core.pretrained.offline_llm import cache_root
from keyseg_core.runtime.export.manifest import read_manifest
from keyseg_core.weights.shipped import sha256 as file_sha256

log = logging.getLogger("keyseg.backends")

ENGINE_FILE = "engine.plan"
META_FILE = "meta.json"
TIMING_CACHE = "timing.cache"
META_VERSION = 1
MAX_SIZES = {"batch": 4, "num_prompts": 8}
WORKSPACE_BYTES = 4 << 30
# |trt - torch| <= ATOL + RTOL * max|torch| for an fp16 engine to be kept (the ONNX fp16 check's limits)
FP16_TOLERANCE = (1e-3, 3e-2)


class EngineError(RuntimeError):
    """An engine that cannot be built, loaded or bound; the message says which and why."""


def engine_cache_dir() -> Path:
    return cache_root() / "trt"


def graph_hash(export_dir: Path, graph: str) -> str:
    """Identity of one exported graph: the export's weight fingerprint and the graph file's bytes."""
    manifest = read_manifest(export_dir)
    entry = manifest["graphs"][graph]
    return hashlib.sha256(f"{manifest['fingerprint']}:{graph}:{file_sha256(export_dir / entry['file'])}"
                          .encode()).hexdigest()


def engine_key(graph: str, trt_version: str, gpu: str, precision: str,
               shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]) -> str:
    """Cache key of an engine: graph hash, TensorRT version, GPU name, precision and profile shapes."""
    text = json.dumps({"graph": graph, "tensorrt": trt_version, "gpu": gpu, "precision": precision,
                       "shapes": {k: [list(s) for s in v] for k, v in sorted(shapes.items())},
                       "version": META_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def profile_shapes(inputs: list[dict[str, Any]], max_sizes: dict[str, int] | None = None
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input from the manifest's shapes: dynamic axes 1, 1, MAX_SIZES."""
    limits = MAX_SIZES | (max_sizes or {})
    shapes = {}
    for t in inputs:
        low = tuple(1 if isinstance(d, str) else d for d in t["shape"])
        high = tuple(limits.get(d, 1) if isinstance(d, str) else d for d in t["shape"])
        shapes[t["name"]] = (low, low, high)
    return shapes


@dataclass
class CachedEngine:
    """An engine's bytes and what it was built from (meta.json)."""

    plan: bytes
    meta: dict[str, Any]
    directory: Path


class EngineCache:
    """Engines under `root/<key>/` (engine.plan + meta.json), validated on every lookup."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else engine_cache_dir()

    def lookup(self, key: str, expected: dict[str, Any]) -> tuple[CachedEngine | None, str]:
        """(engine, "") when the cached entry is whole and was built for `expected`; else (None, why)."""
        directory = self.root / key
        meta_path, plan_path = directory / META_FILE, directory / ENGINE_FILE
        if not meta_path.is_file() or not plan_path.is_file():
            return None, "not built yet"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return None, f"unreadable {META_FILE} ({exc})"
        for field in sorted(expected):
            if meta.get(field) != expected[field]:
                return None, f"built for {field} {meta.get(field)!r}, this is {expected[field]!r}"
        plan = plan_path.read_bytes()
        if len(plan) != meta.get("bytes") or hashlib.sha256(plan).hexdigest() != meta.get("sha256"):
            return None, f"{ENGINE_FILE} is truncated or corrupt ({len(plan)} bytes, meta says {meta.get('bytes')})"
        return CachedEngine(plan, meta, directory), ""

    def store(self, key: str, plan: bytes, meta: dict[str, Any]) -> CachedEngine:
        """Write an engine and its meta.json atomically (a temporary directory renamed into place)."""
        self.root.mkdir(parents=True, exist_ok=True)
        meta = meta | {"bytes": len(plan), "sha256": hashlib.sha256(plan).hexdigest(), "meta_version": META_VERSION,
                       "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=self.root))
        try:
            (tmp / ENGINE_FILE).write_bytes(plan)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            target = self.root / key
            if target.exists():
                old = self.root / f".{key}.old-{os.getpid()}"
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return CachedEngine(plan, meta, self.root / key)

    def invalidate(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)


def get_or_build(cache: EngineCache, key: str, expected: dict[str, Any], build: Callable[[], bytes],
                 load: Callable[[bytes], Any]) -> tuple[Any, CachedEngine, bool]:
    """(loaded engine, cache entry, built now?): the cached engine when valid and loadable, else built,
    stored and loaded. A cached engine that fails to load (other GPU or TensorRT, corrupt) is rebuilt once."""
    entry, why = cache.lookup(key, expected)
    if entry is not None:
        try:
            return load(entry.plan), entry, False
        except Exception as exc:  # noqa: BLE001 - a stale engine is rebuilt, not fatal
            why = f"does not load ({type(exc).__name__}: {exc})"
    log.info("TensorRT engine %s: %s; building it", key, why)
    entry = cache.store(key, build(), expected)
    return load(entry.plan), entry, True


# ---- binding by name ----

@dataclass(frozen=True)
class Binding:
    """One I/O tensor of an engine: name, whether it is an input, and its torch dtype."""

    name: str
    is_input: bool
    dtype: torch.dtype


def check_bindings(bindings: list[Binding], inputs: list[str], outputs: list[str], where: str) -> None:
    """The engine's tensors must be exactly the graph's inputs and outputs, by name (order is free)."""
    have_in = sorted(b.name for b in bindings if b.is_input)
    have_out = sorted(b.name for b in bindings if not b.is_input)
    if have_in != sorted(inputs) or have_out != sorted(outputs):
        raise EngineError(f"{where}: engine tensors (inputs {have_in}, outputs {have_out}) do not match the graph "
                          f"(inputs {sorted(inputs)}, outputs {sorted(outputs)}): engine and model do not match")


def torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.BOOL: torch.bool}
    for name, value in (("BF16", torch.bfloat16), ("INT64", torch.int64)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = value
    if dtype not in table:
        raise EngineError(f"engine tensor type {dtype} has no torch equivalent here")
    return table[dtype]


class TrtGraph:
    """One deserialised engine and its execution context; `run` binds torch CUDA tensors by name."""

    def __init__(self, trt, plan: bytes, inputs: list[str], outputs: list[str], where: str) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(f"{where}: TensorRT could not deserialise the engine (built by another TensorRT "
                              "version or for another GPU, or the file is corrupt)")
        self.context = self.engine.create_execution_context()
        self.bindings = [
            Binding(name, self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                    torch_dtype(trt, self.engine.get_tensor_dtype(name)))
            for name in (self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors))
        ]
        check_bindings(self.bindings, inputs, outputs, where)
        self.where = where

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs (CUDA tensors, cast to the engine's types) by name -> outputs by name."""
        kept = []
        for b in self.bindings:
            if b.is_input:
                x = feeds[b.name].to(b.dtype).contiguous()
                kept.append(x)
                if not self.context.set_input_shape(b.name, tuple(x.shape)):
                    raise EngineError(f"{self.where}: input {b.name} shape {tuple(x.shape)} is outside the "
                                      "engine's optimisation profile")
                self.context.set_tensor_address(b.name, x.data_ptr())
        outputs = {}
        for b in self.bindings:
            if not b.is_input:
                y = torch.empty(tuple(self.context.get_tensor_shape(b.name)), dtype=b.dtype,
                                device=kept[0].device)
                outputs[b.name] = y
                self.context.set_tensor_address(b.name, y.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise EngineError(f"{self.where}: execute_async_v3 failed")
        return outputs


def build_engine(trt, onnx_path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]], timing_cache: Path,
                 workspace: int = WORKSPACE_BYTES) -> bytes:
    """Serialised engine of one ONNX graph (precision from the graph: strongly typed), one profile."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT's ONNX parser refused the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


# ---- the backend ----

class TrtSamSegmenter(ImageByImageDecoding, nn.Module):
    """SAM encoder and decoder engines behind the SamSegmenter interface (no parameters)."""

    accepts_mask_prompt = False

    def __init__(self, encoder: TrtGraph, decoder: TrtGraph, manifest: dict[str, Any]) -> None:
        super().__init__()
        self._encoder, self._decoder = encoder, decoder
        self.image_size: int = manifest["image_size"]
        self._prompt_dim: int = manifest["prompt_dim"]

    @property
    def prompt_dim(self) -> int:
        return self._prompt_dim

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._encoder.run({"pixels": pixels})
        return out["image_embeddings"].to(pixels.dtype)

    def decode(self, embedding: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._decoder.run({"image_embeddings": embedding, "prompts": prompts})
        return out["low_res_masks"].to(embedding.dtype), out["iou_predictions"].to(embedding.dtype)


def _engine(trt, export_dir: Path, graph: str, precision: str, gpu: str, cache: EngineCache) -> tuple[TrtGraph, bool]:
    manifest = read_manifest(export_dir)
    entry = manifest["graphs"][graph]
    shapes = profile_shapes(entry["inputs"])
    expected = {"graph": graph_hash(export_dir, graph), "tensorrt": trt.__version__, "gpu": gpu,
                "precision": precision, "name": graph}
    key = engine_key(expected["graph"], trt.__version__, gpu, precision, shapes)
    names_in = [t["name"] for t in entry["inputs"]]
    names_out = [t["name"] for t in entry["outputs"]]
    where = f"TensorRT engine for {graph} ({precision})"
    runner, _, built = get_or_build(
        cache, key, expected,
        build=lambda: build_engine(trt, export_dir / entry["file"], shapes, cache.root / TIMING_CACHE),
        load=lambda plan: TrtGraph(trt, plan, names_in, names_out, where))
    return runner, built


def _accurate(want: torch.Tensor, have: torch.Tensor) -> bool:
    atol, rtol = FP16_TOLERANCE
    return float((want.float() - have.float()).abs().max()) <= atol + rtol * float(want.float().abs().max())


def load_tensorrt(model, device: torch.device, *, cache: EngineCache | None = None
                  ) -> tuple[str, Callable, TrtSamSegmenter]:
    """Build or load engines for the vision tower, SAM encoder and decoder; fp16 where accurate.

    Returns (reason, vision runner, SAM segmenter); raises (EngineError, ImportError, ...) with the
    cause when anything does not work. The model is only read.
    """
    import tensorrt as trt

    from keyseg_core.runtime.backends.onnxruntime_sam import cached_export, cached_vision_export

    cache = cache or EngineCache()
    gpu = torch.cuda.get_device_name(device)
    sam, llava = model.sam, model.llava.model
    param = next(model.parameters())
    clip = llava.config.vision_config.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, sam.image_size, sam.image_size, generator=gen).to(device, param.dtype)
    clip_pixels = torch.randn(1, 3, clip, clip, generator=gen).to(device, param.dtype)
    with torch.inference_mode():
        want_emb = sam.encode(pixels).float()
        prompts = torch.randn(1, sam.prompt_dim, generator=gen).to(device, param.dtype)
        want_mask = sam.decode(want_emb.to(param.dtype), prompts)[0].float()
        from keyseg_core.modeling.keyseg import image_features
        want_vis = image_features(llava, clip_pixels).float()
    chosen = {}
    for precision in ("fp16", "fp32"):
        fp16 = precision == "fp16"
        try:
            sam_dir, vision_dir = cached_export(sam, fp16=fp16), cached_vision_export(llava, fp16=fp16)
            encoder, _ = _engine(trt, sam_dir, "sam_encoder", precision, gpu, cache)
            decoder, _ = _engine(trt, sam_dir, "decoder", precision, gpu, cache)
            vision, _ = _engine(trt, vision_dir, "vision_tower", precision, gpu, cache)
        except Exception as exc:  # noqa: BLE001 - fp16 that cannot be exported or built: try fp32
            if not fp16:
                raise
            log.warning("TensorRT fp16 engines could not be made (%s: %s); trying fp32", type(exc).__name__, exc)
            continue
        segmenter = TrtSamSegmenter(encoder, decoder, read_manifest(sam_dir))
        with torch.inference_mode():
            emb = segmenter.encode(pixels)
            ok = {"sam_encoder": _accurate(want_emb, emb),
                  "decoder": _accurate(want_mask, segmenter.decode(want_emb.to(param.dtype), prompts)[0]),
                  "vision_tower": _accurate(want_vis, vision.run({"pixels": clip_pixels})["image_features"])}
        if all(ok.values()) or not fp16:
            chosen = {"precision": precision, "segmenter": segmenter, "vision": vision, "checks": ok}
            break
        log.warning("TensorRT fp16 engines not accurate enough (%s); using fp32 engines",
                    ", ".join(k for k, v in ok.items() if not v))
    if not all(chosen["checks"].values()):
        raise EngineError(f"TensorRT engines differ from torch beyond tolerance: {chosen['checks']}")
    dtype = param.dtype

    def run_vision(x: torch.Tensor) -> torch.Tensor:  # the graph's batch is 1
        return torch.cat([chosen["vision"].run({"pixels": x[i:i + 1]})["image_features"] for i in range(len(x))]
                         ).to(dtype)

    return (f"TensorRT {trt.__version__} {chosen['precision']} engines on {gpu} (cache {cache.root})", run_vision,
            chosen["segmenter"])
