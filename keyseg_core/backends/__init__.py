"""Inference backends for KeySeg's per-frame graphs (vision tower, SAM image encoder, prompt-to-mask
decoder); the LLM and the fusion module always run in torch.

  torch        the modules as they are
  compile      torch.compile of the per-frame graphs; on CUDA with CUDA graphs ("reduce-overhead")
  onnxruntime  the exported ONNX graphs (exported and checked on first use, cached by weight hash)
  tensorrt     TensorRT engines built from those graphs with TensorRT's Python API (cached by graph
               hash, TensorRT version, GPU and precision; rebuilt on mismatch)
  auto         tensorrt, then compile (CUDA only), then onnxruntime, then torch: the first that
               loads; each one skipped is logged once with the reason

Every backend is loaded and run once at load time (a warm-up), so one that cannot work fails there
with a message that says why, never at the first frame. A named backend that cannot load is an error;
`auto` moves on to the next.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..model import KeySegModel

BACKENDS = ("torch", "compile", "onnxruntime", "tensorrt", "auto")
AUTO_ORDER = ("tensorrt", "compile", "onnxruntime", "torch")
log = logging.getLogger("keyseg.backends")

TENSORRT_INSTALL = (
    "TensorRT is not installed here (its libraries come only from NVIDIA's package index: "
    "`pip install tensorrt --extra-index-url https://pypi.nvidia.com` on a CUDA machine). With it, keyseg "
    "builds and caches the engines itself at load; without it, use backend 'auto' (falls back to the next "
    "backend), or run `keyseg export` and build engines with the trtexec lines it prints (docs/export.md)"
)


class BackendUnavailable(RuntimeError):
    """A backend that cannot run on this machine or failed to load; the message says why."""


@dataclass
class BackendChoice:
    """Which backend runs the per-frame graphs, and why.

    vision: the vision tower + projector replacement ((B, 3, s, s) -> (B, n_img, d)), or None when
    the model's own tower runs. skipped: (backend, reason) of each one `auto` passed over.
    """

    name: str
    requested: str
    reason: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    vision: Callable | None = None

    def describe(self) -> str:
        text = f"backend '{self.name}' ({self.reason})"
        if self.skipped:
            text += "; skipped: " + "; ".join(f"{name}: {why}" for name, why in self.skipped)
        return text


def check_backend(backend: str) -> None:
    """ValueError for anything but a known backend name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}' is not one of {', '.join(BACKENDS)}")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def unavailable_reason(name: str, device: torch.device, *, auto: bool) -> str | None:
    """Why `name` cannot run here, found without loading anything; None when it may."""
    if name == "tensorrt":
        if not installed("tensorrt"):
            return TENSORRT_INSTALL
        if device.type != "cuda":
            return "TensorRT needs a CUDA device"
    elif name == "compile":
        if auto and device.type != "cuda":
            return "auto compiles only on CUDA (on a CPU, compiling takes minutes for little gain)"
    elif name == "onnxruntime":
        missing = [m for m in ("onnxruntime", "onnx") if not installed(m)]
        if missing:
            return f"{' and '.join(missing)} not installed (pip install onnx onnxruntime, or onnxruntime-gpu)"
    return None


def _load(name: str, model: KeySegModel, device: torch.device) -> tuple[str, Callable | None]:
    """Load backend `name` into `model` (swapping `model.sam` only once it works): (reason, vision)."""
    if name == "torch":
        return "the modules as they are", None
    if name == "compile":
        from .compiled import load_compiled

        return load_compiled(model, device)
    if name == "onnxruntime":
        from .onnxruntime_sam import load_onnxruntime

        return load_onnxruntime(model, device)
    if name == "tensorrt":
        from .tensorrt import load_tensorrt

        return load_tensorrt(model, device)
    raise ValueError(f"backend '{name}' is not one of {', '.join(BACKENDS)}")


def use_backend(model: KeySegModel, backend: str, device: torch.device) -> BackendChoice:
    """Put `backend` in charge of `model`'s per-frame graphs; 'auto' tries AUTO_ORDER.

    Raises BackendUnavailable for a named backend that cannot run (the message says why and what
    to do instead); under 'auto' each failure is logged once and the next backend is tried.
    """
    check_backend(backend)
    auto = backend == "auto"
    skipped: list[tuple[str, str]] = []
    for name in AUTO_ORDER if auto else (backend,):
        why = unavailable_reason(name, device, auto=auto)
        if why is None:
            try:
                reason, vision = _load(name, model, device)
            except Exception as exc:  # noqa: BLE001 - any load failure is reported by name, then skipped
                why = str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"
            else:
                choice = BackendChoice(name, backend, reason, skipped, vision)
                if auto:
                    log.info("backend auto: chose %s", choice.describe())
                return choice
        if not auto:
            raise BackendUnavailable(f"backend '{name}' cannot run: {why}")
        skipped.append((name, why))
        log.warning("backend auto: %s cannot run (%s); trying the next backend", name, why)
    raise AssertionError("torch is always available")  # pragma: no cover
