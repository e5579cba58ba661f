"""The dtype a model runs in: 'auto' and the named ones, checked against the GPU before loading.

bfloat16 needs compute capability 8.0 (Ampere) or newer: on an older GPU (a T4, a V100, a Jetson
Xavier) torch emulates it, many times slower, or fails in a kernel mid-frame. So 'auto' picks
float16 there and says why, and an explicit 'bfloat16' is refused before anything loads.
"""

from __future__ import annotations

import logging

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
log = logging.getLogger("keyseg.precision")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA (float16 on a GPU without native bfloat16, with one warning),
    float32 elsewhere; a named dtype as is. ValueError for an unknown name, and for 'bfloat16' on a
    GPU without it. Support is asked of the current CUDA device, and only where CUDA is available."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' is not one of auto, {', '.join(DTYPES)}")
    if device.type != "cuda":
        return DTYPES.get(dtype, torch.float32)
    missing = _no_bf16(device)
    if dtype == "bfloat16" and missing:
        raise ValueError(f"dtype 'bfloat16' cannot run here: {missing}; use dtype 'float16' or 'auto'")
    if dtype == "auto" and missing:
        log.warning("dtype auto: float16, because %s", missing)
        return torch.float16
    return DTYPES.get(dtype, torch.bfloat16)


def _no_bf16(device: torch.device) -> str | None:
    """Why this GPU has no native bfloat16 ('cuda:0 (Tesla T4) has no native bfloat16 ...'), or None."""
    if not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False):
        return None
    return (f"{device} ({torch.cuda.get_device_name(device)}) has no native bfloat16 "
            "(it needs compute capability 8.0 or newer)")


def enable_tf32() -> None:
    """What stays in float32 on CUDA (SAM's postprocessing, a float32 model) uses TF32 tensor cores."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
