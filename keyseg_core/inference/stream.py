"""Streaming: reason once per question, segment every frame.

A full KeySeg pass (vision tower, LLM, fusion: the slow, LLM-bound half) runs when a new query
arrives, every `period_s` seconds, or on request; it yields S_hat and the keyword. Every frame runs
only SAM's image encoder and mask decoder with that cached S_hat (optionally with the previous
frame's mask as a dense prompt). This is beyond the paper, which runs the whole model per image; the
cost in mask quality is measured by `keyseg bench --video` (docs/results.md, "Speed and memory").

`StreamingSegmenter` runs either
  synchronously  (background=False): a due reasoning runs inline on the frame that triggers it, which
                 then gets a fresh result; the benchmark and tests use this, and count LLM passes;
  beside the frames (background=True): a due reasoning is handed to a worker thread with the newest
                 frame, and `step` goes on segmenting with the S_hat it has (frames never wait on the
                 LLM). A query that arrives while the worker reasons replaces the pending one; the
                 worker's result for a query that is no longer current is dropped. Until the first
                 reasoning of a query is ready, `step` returns None. The worker's own frame, fully
                 processed, goes to `on_reasoned`.

Each result says whether its frame had a fresh reasoning pass and how old the reasoning is (seconds
between the reasoned frame and this one, on the caller's clock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from keyseg_core.inference.reasoner import Reasoning
from keyseg_core.inference.results import Prediction

ReasonFn = Callable[[np.ndarray, str], Reasoning]
SegmentFn = Callable[[np.ndarray, Reasoning, "torch.Tensor | None"], "tuple[Prediction, torch.Tensor]"]


@dataclass
class StreamResult:
    """One frame's result: the prediction (its `fresh_reasoning`/`reasoning_age_s` set), the reasoning
    it used, and the caller's tag of the frame."""

    prediction: Prediction
    reasoning: Reasoning
    tag: Any = None

    @property
    def query(self) -> str:
        return self.reasoning.query


@dataclass
class _Current:
    reasoning: Reasoning
    frame_time: float  # the caller's time of the frame it reasoned on
    low_res: torch.Tensor | None = None  # the last mask of this reasoning, for a dense prompt


class StreamingSegmenter:
    """Drives a predictor's two halves on their own clocks (see the module docstring).

    reason/segment default to `predictor.reason`/`predictor.segment`; a caller may wrap them (the ROS
    node adds fault drills and its busy flag). `on_reasoned(result)` and `on_error(exc)` are called
    from the worker thread in background mode.
    """

    def __init__(
        self,
        predictor=None,
        *,
        period_s: float = 0.0,
        previous_mask: bool = False,
        background: bool = False,
        reason: ReasonFn | None = None,
        segment: SegmentFn | None = None,
        on_reasoned: Callable[[StreamResult], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        device: torch.device | None = None,
    ) -> None:
        if period_s < 0:
            raise ValueError(f"period_s must be >= 0 (0: reason only on a new query or on request), got {period_s}")
        if reason is None or segment is None:
            if predictor is None:
                raise ValueError("give a predictor, or both reason and segment")
        self._reason = reason or predictor.reason
        self._segment = segment or predictor.segment
        self.period_s = period_s
        self.previous_mask = previous_mask
        self.background = background
        self.on_reasoned = on_reasoned
        self.on_error = on_error
        self.clock = clock
        self.device = device if device is not None else getattr(predictor, "device", None)
        self.reasonings = 0  # reasoning passes started
        self._lock = threading.Lock()
        self._query: str | None = None
        self._pending: str | None = None  # why a reasoning is due: new query / request
        self._current: _Current | None = None
        self._last_start = -float("inf")
        self._job: tuple[np.ndarray, str, float, Any] | None = None
        self._running = False  # the worker is reasoning
        self._closed = False
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        if background:
            self._worker = threading.Thread(target=self._work, name="keyseg_reasoning", daemon=True)
            self._worker.start()

    # ---- what to reason about ----

    @property
    def query(self) -> str | None:
        return self._query

    def set_query(self, query: str) -> None:
        """A new question: reasoning is due on the next frame (replacing one still pending)."""
        with self._lock:
            if query != self._query:
                self._query, self._pending = query, "new query"

    def clear(self) -> None:
        """No question: frames get no result until the next one."""
        with self._lock:
            self._query, self._pending = None, None

    def request(self) -> None:
        """Reason again on the next frame (a scene change, a user's request)."""
        with self._lock:
            if self._query is not None:
                self._pending = self._pending or "request"

    def set_period(self, period_s: float) -> None:
        if period_s < 0:
            raise ValueError(f"period_s must be >= 0, got {period_s}")
        self.period_s = period_s

    def _due(self, now: float) -> str | None:
        if self._query is None:
            return None
        if self._pending:
            return self._pending
        if self.period_s > 0 and now - self._last_start >= self.period_s:
            return "period"
        return None

    # ---- frames ----

    def step(self, image: np.ndarray, now: float | None = None, tag: Any = None) -> StreamResult | None:
        """This frame's result, or None (no query, or its first reasoning is not ready yet).

        `now`: the frame's time on the caller's clock (default: `clock()`); reasoning age counts in it.
        """
        now = self.clock() if now is None else now
        with self._lock:
            due = self._due(now)
            query = self._query
            if due and not self.background:
                self._pending, self._last_start = None, now
            elif due and not self._running and self._job is None:
                self._pending, self._last_start = None, now
                self._job = (image, query, now, tag)
                self._wake.notify()
            current = self._current if self._current and self._current.reasoning.query == query else None
        if due and not self.background:
            return self._reason_and_segment(image, query, now, tag)
        if current is None:
            return None
        return self._segment_with(image, current, now, tag)

    def _reason_and_segment(self, image: np.ndarray, query: str, now: float, tag: Any,
                            stream: torch.cuda.Stream | None = None) -> StreamResult:
        """A full pass on this frame: reasoning (on `stream`, when given), then its mask (the fresh result)."""
        self.reasonings += 1
        try:
            if stream is None:
                reasoning = self._reason(image, query)
            else:  # the LLM's kernels must not queue in front of the frames' on the default stream
                with torch.cuda.stream(stream):
                    reasoning = self._reason(image, query)
                stream.synchronize()
                reasoning.prompts = reasoning.prompts.clone()  # owned by the stream the frames read it on
        except BaseException:
            with self._lock:
                if self._pending is None and self._query == query:
                    self._pending = "retry"  # the next frame tries again
            raise
        current = _Current(reasoning, now)
        with self._lock:
            if self._query == query:
                self._current = current
        return self._segment_with(image, current, now, tag, fresh=True)

    def _segment_with(self, image: np.ndarray, current: _Current, now: float, tag: Any,
                      fresh: bool = False) -> StreamResult:
        prompt = current.low_res if self.previous_mask else None
        prediction, low_res = self._segment(image, current.reasoning, prompt)
        current.low_res = low_res
        prediction.fresh_reasoning = fresh
        prediction.reasoning_age_s = 0.0 if fresh else max(now - current.frame_time, 0.0)
        return StreamResult(prediction, current.reasoning, tag)

    # ---- the worker (background mode) ----

    def _work(self) -> None:
        device = self.device
        stream = torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
        while True:
            with self._lock:
                while self._job is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                image, query, now, tag = self._job
                self._job, self._running = None, True
            try:
                result = self._reason_and_segment(image, query, now, tag, stream)
            except Exception as exc:  # noqa: BLE001 - reported; the next frame retries
                with self._lock:
                    self._running = False
                if self.on_error is not None and not self._closed:
                    self.on_error(exc)
                continue
            with self._lock:
                self._running = False
                current = self._query == query
            if current and self.on_reasoned is not None and not self._closed:
                self.on_reasoned(result)

    @property
    def reasoning_in_progress(self) -> bool:
        return self._running or self._job is not None

    def close(self, timeout: float | None = None) -> bool:
        """Stop the worker (it finishes the reasoning it is in); True when it has ended."""
        with self._lock:
            self._closed = True
            self._job = None
            self._wake.notify_all()
        worker = self._worker
        if worker is None or worker is threading.current_thread():
            return True
        worker.join(timeout)
        return not worker.is_alive()
