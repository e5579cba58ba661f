"""Counters the node keeps, and their /diagnostics (diagnostic_msgs) form.

Every refused input and every error ends up here, so a user looking at /diagnostics (rqt's
Runtime Monitor, Foxglove, `ros2 topic echo /diagnostics`) sees why masks are missing, even
after the throttled log warnings have scrolled away.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from builtin_interfaces.msg import Time

# Counter names, in the order shown in diagnostics.
COUNTERS = (
    "frames_received",
    "frames_processed",
    "frames_dropped",  # replaced by a newer frame before the model got to them
    "frames_without_query",
    "frames_awaiting_reasoning",  # streaming: a new query's first reasoning was not ready yet
    "reasonings",  # streaming: reasoning passes finished (a full pass on one frame each)
    "bad_frames",
    "queries_received",
    "bad_queries",
    "inference_errors",
    "service_calls",
    "depth_received",
    "targets_3d",  # frames whose target_point, target_cloud and detections_3d went out
    "depth_sync_drops",  # answered frames whose depth and camera_info never matched within sync_slop
    "invalid_depth_pixels",  # mask pixels whose depth was 0, NaN or beyond max_depth
    "too_few_points",  # frames without 3D output: too few valid depths on the target
    "bad_depth",  # depth of another size or encoding, camera_info unusable or missing
    "tf_failures",  # no transform to target_frame at the frame's stamp
)
# Counters that make the status WARN when they grew during the last period.
_PROBLEMS = ("bad_frames", "bad_queries", "inference_errors", "bad_depth", "tf_failures")


@dataclass
class NodeStats:
    """Thread-safe counters and latency samples, shared by callbacks and the inference thread."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last_problem: str = ""
    _latencies_ms: list[float] = field(default_factory=list)
    _model_ms: list[float] = field(default_factory=list)
    _period_start: float = field(default_factory=time.monotonic)
    _period_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str, problem: str = "") -> None:
        """Add one to counter `name`; `problem` (if any) becomes the last problem reported."""
        with self._lock:
            self.counts[name] += 1
            if problem:
                self.last_problem = f"{name}: {problem}"

    def add(self, name: str, amount: int) -> None:
        """Add `amount` to counter `name` (a pixel count, say)."""
        with self._lock:
            self.counts[name] += amount

    def frame_done(self, latency_ms: float, model_ms: float) -> None:
        """Record one published result: receive-to-publish latency and model time."""
        with self._lock:
            self.counts["frames_processed"] += 1
            self._latencies_ms.append(latency_ms)
            self._model_ms.append(model_ms)

    def snapshot(self) -> dict[str, float]:
        """Totals plus this period's rate and latency; starts a new period."""
        with self._lock:
            now = time.monotonic()
            period = max(now - self._period_start, 1e-6)
            grown = {k: self.counts[k] - self._period_counts[k] for k in COUNTERS}
            lat, model = self._latencies_ms, self._model_ms
            values: dict[str, float] = dict(self.counts)
            values["rate_hz"] = grown["frames_processed"] / period
            values["latency_ms_mean"] = sum(lat) / len(lat) if lat else 0.0
            values["latency_ms_max"] = max(lat) if lat else 0.0
            values["model_ms_mean"] = sum(model) / len(model) if model else 0.0
            values.update({f"new_{k}": grown[k] for k in _PROBLEMS})
            self._period_start, self._period_counts = now, dict(self.counts)
            self._latencies_ms, self._model_ms = [], []
            return values


def to_diagnostics(
    values: dict[str, float],
    *,
    name: str,
    model: str,
    state: str,
    query: str | None,
    untrained: bool,
    last_problem: str,
    stamp: Time,
    in_model: bool = False,
) -> DiagnosticArray:
    """One DiagnosticStatus (OK/WARN/ERROR) describing the node, from a `snapshot()`."""
    if values["new_inference_errors"] and not values["rate_hz"]:
        level, message = DiagnosticStatus.ERROR, "inference failing"
    elif any(values[f"new_{k}"] for k in _PROBLEMS):
        level, message = DiagnosticStatus.WARN, "refused input or errors in the last period"
    elif untrained:
        level, message = DiagnosticStatus.WARN, "model weights are untrained (random init)"
    elif state != "active":
        level, message = DiagnosticStatus.OK, f"{state}"
    else:
        level, message = DiagnosticStatus.OK, "segmenting" if query else "waiting for a query"
    kv = [KeyValue(key="state", value=state), KeyValue(key="query", value=query or ""),
          KeyValue(key="inference_in_progress", value=str(in_model).lower())]
    kv += [KeyValue(key=k, value=str(values[k])) for k in COUNTERS]
    kv += [
        KeyValue(key=k, value=f"{values[k]:.2f}")
        for k in ("rate_hz", "latency_ms_mean", "latency_ms_max", "model_ms_mean")
    ]
    kv.append(KeyValue(key="last_problem", value=last_problem))
    status = DiagnosticStatus(
        level=level, name=name, message=message, hardware_id=model, values=kv
    )
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
