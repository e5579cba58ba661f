"""Inference backends for KeySeg's SAM parts: torch (default) or onnxruntime over the exported graphs.

TensorRT is refused with directions instead of failing later: it cannot be installed here, and on a
robot the engine is built from the exported ONNX with trtexec (docs/export.md).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..model import KeySegModel

BACKENDS = ("torch", "onnxruntime")
TENSORRT_MESSAGE = (
    "backend 'tensorrt' is not available: TensorRT cannot be installed in this environment, so keyseg does "
    "not run TensorRT engines itself. On the robot, export the SAM graphs with `keyseg export --model <model> "
    "--out <dir>` (it prints the trtexec lines for that export) and build engines with trtexec, e.g. "
    "`trtexec --onnx=<dir>/sam_encoder.onnx --saveEngine=$HOME/.cache/keyseg/trt/sam_encoder.engine --fp16 "
    "--minShapes=pixels:1x3x1024x1024 --optShapes=pixels:1x3x1024x1024 --maxShapes=pixels:4x3x1024x1024` "
    "(docs/export.md); or use backend='onnxruntime' (its TensorrtExecutionProvider, where installed, builds "
    "engines too)"
)


def check_backend(backend: str) -> None:
    """ValueError for anything but a supported backend name (TensorRT: with how to build an engine)."""
    if backend == "tensorrt":
        raise ValueError(TENSORRT_MESSAGE)
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}' is not one of {', '.join(BACKENDS)}")


def use_backend(model: KeySegModel, backend: str, device: torch.device) -> None:
    """Swap `model.sam` for the backend's segmenter (no-op for torch); exports on first use, then cached."""
    check_backend(backend)
    if backend == "onnxruntime":
        import torch

        from .onnxruntime_sam import OrtSamSegmenter, cached_export
        from .ort import CPU, CUDA, resolve_providers

        fp16 = next(model.sam.parameters()).dtype == torch.float16
        providers = resolve_providers(None) if device.type == "cuda" else [CPU]
        if device.type == "cuda" and CUDA not in providers:
            warnings.warn("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu); "
                          "the SAM graphs run on the CPU", stacklevel=2)
        model.sam = OrtSamSegmenter(cached_export(model.sam, fp16=fp16), providers)
