"""Per-stage wall time: the `timer` every forward path reports its stages to.

A timer is a callable `timer(stage)` returning a context manager; the model's halves, the reasoner
and the segmenter wrap each stage in one, so per-stage latency comes from the code that actually
runs. `no_timer` records nothing; `StageTimer` records milliseconds per stage (wall time, or on
CUDA per-stream event time when work overlaps on several streams).
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
    """Context-manager factory recording milliseconds per stage in `ms` (stage -> ms, summed over the
    stage's entries).

    Two modes:
      default       wall time, synchronising the whole CUDA device at each stage boundary, so the
                    numbers are real (and any work queued on other CUDA streams is waited for too);
      events=True   on CUDA, no synchronisation inside the call: each stage records a CUDA event on
                    the current stream when it starts and one when it ends, and the events are
                    resolved to milliseconds when `ms` is first read afterwards (one wait for the
                    events, not one per boundary). Stages that run on different streams at once are
                    each timed on their own stream's clock, so the stages may add up to more than the
                    call's wall time. On the CPU this mode is the default mode: wall time.
    """

    def __init__(self, device: torch.device, events: bool = False) -> None:
        self.device = device
        self.events = events and device.type == "cuda"
        self._ms: dict[str, float] = {}
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @property
    def ms(self) -> dict[str, float]:
        """Milliseconds per stage; in events mode, reading it waits for the recorded stages to finish."""
        if self._pending:
            self._resolve()
        return self._ms

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.events:
            stream = torch.cuda.current_stream(self.device)
            begin = torch.cuda.Event(enable_timing=True)
            begin.record(stream)
            yield
            end = torch.cuda.Event(enable_timing=True)
            end.record(stream)
            self._pending.append((stage, begin, end))
            return
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self._ms[stage] = self._ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

    def _resolve(self) -> None:
        pending, self._pending = self._pending, []
        for stage, begin, end in pending:
            end.synchronize()  # waits on that event's stream only
            self._ms[stage] = self._ms.get(stage, 0.0) + begin.elapsed_time(end)

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
