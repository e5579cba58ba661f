"""Per-stage wall time: the `timer` every forward path reports its stages to.

A timer is a callable `timer(stage)` returning a context manager; the model's halves, the reasoner
and the segmenter wrap each stage in one, so per-stage latency comes from the code that actually
runs. `no_timer` records nothing; `StageTimer` records milliseconds per stage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import ContextManager

import torch

Timer = Callable[[str], ContextManager[None]]


def no_timer(_: str) -> ContextManager[None]:
    """The default timer: measures nothing."""
    return contextlib.nullcontext()


class StageTimer:
    """Context-manager factory recording wall time per stage (synchronising CUDA so numbers are real)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def call_times_ms(fn: Callable[[], object], iters: int, warmup: int = 1,
                  device: torch.device | None = None) -> list[float]:
    """Milliseconds of each of `iters` calls of `fn`, after `warmup` untimed ones: the benchmarks' loop.
    With a CUDA `device` each timed call is synchronised, so its time is the work's, not its launch's."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        runs.append((time.perf_counter() - start) * 1e3)
    return runs
