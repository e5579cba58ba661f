"""Out of GPU memory: telling it from other errors, freeing what the failed step held, one-line causes.

torch's out-of-memory message runs to several sentences of allocator advice; a robot's log wants one
line that names the device and what was being done, so `summary` keeps its first sentences.
onnxruntime and cuBLAS report the same condition as plain RuntimeErrors, recognised by their text.
"""

from __future__ import annotations

import gc

import torch

MARKERS = ("out of memory", "failed to allocate memory")  # cuBLAS/CUDA runtime, onnxruntime's arena
SUMMARY_CHARS = 160


class OutOfGpuMemory(torch.OutOfMemoryError):
    """Out of memory, reported in one line naming the device and the step. A subclass of torch's own,
    so callers that already handle torch.OutOfMemoryError (the ROS node) keep doing so."""


def is_out_of_memory(exc: BaseException | None) -> bool:
    """torch's OutOfMemoryError, a RuntimeError that says so, or one raised from either (a backend's
    "warm-up failed" wraps its cause)."""
    while exc is not None:
        if isinstance(exc, torch.OutOfMemoryError) or (
                isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in MARKERS)):
            return True
        exc = exc.__cause__
    return False


def summary(exc: BaseException) -> str:
    """The first line of the error, cut after the last whole sentence within SUMMARY_CHARS."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(text) <= SUMMARY_CHARS:
        return text
    cut = text.rfind(". ", 0, SUMMARY_CHARS)
    return text[: cut + 1] if cut > 0 else text[:SUMMARY_CHARS] + "..."


def free_gpu_memory() -> None:
    """Drop unreachable tensors (a failed step's, held in reference cycles), then hand the CUDA
    allocator's cached blocks back, so the next step or backend starts from what is really free.
    Call it outside the `except` block: until then the traceback keeps the failed step's tensors."""
    gc.collect()
    torch.cuda.empty_cache()  # a no-op where CUDA was never initialised
