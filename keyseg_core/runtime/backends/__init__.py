"""Inference backends for KeySeg's per-frame graphs (vision tower, SAM image encoder, prompt-to-mask
decoder); the LLM and the fusion module run in torch (compile also compiles the LLM prefill).

  torch        the modules as they are
  compile      torch.compile of the per-frame graphs and of the LLM prefill at static shapes
               (StaticCache); on CUDA with CUDA graphs ("reduce-overhead")
  onnxruntime  the exported ONNX graphs (exported and checked on first use, cached by weight hash)
  tensorrt     TensorRT engines built from those graphs with TensorRT's Python API (cached by graph
               hash, TensorRT version, GPU and precision; rebuilt on mismatch)
  auto         tensorrt, then compile (CUDA only), then onnxruntime, then torch: the first that
               loads; each one skipped is logged once with the reason

Every backend is loaded and run once at load time (a warm-up), so one that cannot work fails there
with a message that says why, never at the first frame. A named backend that cannot load is an error;
`auto` moves on to the next. Out of GPU memory while loading one is said in one line (device, backend,
torch's first sentences) and the memory it took is freed before the next is tried.

A backend returns what it runs (`BackendChoice.sam`, `.vision`, `.llm`) and leaves the model as it
is: the model keeps its torch SAM, vision tower and LLM, the predictor runs the choice's. A backend that keeps
running out of GPU memory on frames can be stepped down from (`step_down`, called by the predictor):
under `auto`, the next one in AUTO_ORDER is loaded from the model's torch parts in its place.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keyseg_core.inference.gpu_memory import free_gpu_memory, is_out_of_memory, summary

if TYPE_CHECKING:
    import torch
    from torch import nn

    from keyseg_core.inference.static_prefill import StaticPrefill
    from keyseg_core.modeling.keyseg import KeySegModel

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
    the model's own tower runs. sam: the segmenter that runs SAM (encode, decode, decode_batch), or
    None when the model's own torch SAM runs. llm: the reasoner's static-shape prefix prefill and
    suffix extension (`StaticPrefill`, compile only), or None when they run eagerly. skipped:
    (backend, reason) of each one `auto` passed over or stepped down from.
    """

    name: str
    requested: str
    reason: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    vision: Callable | None = None
    sam: nn.Module | None = None
    llm: StaticPrefill | None = None

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


# (reason, vision runner, SAM segmenter, LLM prefill runner)
Loaded = tuple[str, "Callable | None", "nn.Module | None", "StaticPrefill | None"]


def _load(name: str, model: KeySegModel, device: torch.device) -> Loaded:
    """Load backend `name` from the model's torch parts, which it only reads."""
    if name == "torch":
        return "the modules as they are", None, None, None
    if name == "compile":
        from keyseg_core.runtime.backends.compiled import load_compiled

        return load_compiled(model, device)
    if name == "onnxruntime":
        from keyseg_core.runtime.backends.onnxruntime_sam import load_onnxruntime

        return (*load_onnxruntime(model, device), None)
    if name == "tensorrt":
        from keyseg_core.runtime.backends.tensorrt import load_tensorrt

        return (*load_tensorrt(model, device), None)
    raise ValueError(f"backend '{name}' is not one of {', '.join(BACKENDS)}")


def use_backend(model: KeySegModel, backend: str, device: torch.device) -> BackendChoice:
    """Put `backend` in charge of `model`'s per-frame graphs; 'auto' tries AUTO_ORDER.

    Raises BackendUnavailable for a named backend that cannot run (the message says why and what
    to do instead); under 'auto' each failure is logged once and the next backend is tried.
    """
    check_backend(backend)
    return _first_that_loads(model, AUTO_ORDER if backend == "auto" else (backend,), device, backend, [])


def can_step_down(choice: BackendChoice) -> bool:
    """Whether `step_down` has a next backend for `choice`: only under `auto`, and not below torch."""
    return choice.requested == "auto" and choice.name != AUTO_ORDER[-1]


def step_down(model: KeySegModel, choice: BackendChoice, device: torch.device, why: str) -> BackendChoice | None:
    """Under `auto`, the next backend in AUTO_ORDER that loads in place of `choice`; None when there is
    none (a named backend, or torch already). The caller drops its references to the old choice's
    runtime first, so that its memory is freed before the next one loads; the model's torch SAM must
    be on `device` (every backend is loaded from it)."""
    if not can_step_down(choice):
        return None
    rest = AUTO_ORDER[AUTO_ORDER.index(choice.name) + 1:]
    log.warning("backend auto: %s %s; stepping down to the next backend", choice.name, why)
    choice.sam = choice.vision = choice.llm = None  # the old runtime goes with its last reference
    free_gpu_memory()
    return _first_that_loads(model, rest, device, choice.requested, [*choice.skipped, (choice.name, why)])


def _first_that_loads(model: KeySegModel, names: tuple[str, ...], device: torch.device, requested: str,
                      skipped: list[tuple[str, str]]) -> BackendChoice:
    """The first of `names` that loads; each failure is logged (auto) or raised (a named backend)."""
    auto = requested == "auto"
    for name in names:
        why = unavailable_reason(name, device, auto=auto)
        loaded = _try_load(name, model, device) if why is None else why
        if not isinstance(loaded, str):
            choice = BackendChoice(name, requested, loaded[0], skipped, vision=loaded[1], sam=loaded[2],
                                   llm=loaded[3])
            if auto:
                log.info("backend auto: chose %s", choice.describe())
            return choice
        if not auto:
            raise BackendUnavailable(f"backend '{name}' cannot run: {loaded}")
        skipped.append((name, loaded))
        log.warning("backend auto: %s cannot run (%s); trying the next backend", name, loaded)
    raise AssertionError("torch is always available")  # pragma: no cover


def _try_load(name: str, model: KeySegModel, device: torch.device) -> Loaded | str:
    """_load's result, or why it failed in one line (after freeing what an out-of-memory load held)."""
    try:
        return _load(name, model, device)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported by name, then skipped
        if not is_out_of_memory(exc):
            return str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"
        why = f"out of GPU memory on {device} while loading it ({summary(exc)})"
    free_gpu_memory()  # outside the except block: the traceback no longer holds the load's tensors
    return why
