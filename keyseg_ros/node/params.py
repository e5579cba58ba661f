"""The node's parameters: names, defaults, descriptions and validation, in one table.

Kept apart from the node so the launch file, the params YAML, the docs and the tests can all be
checked against one list, and so a wrong value is refused with a message naming the parameter
both at start-up and on a later `ros2 param set`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# keyseg_core's backends (imported without torch): the node offers exactly what keyseg_core has
from keyseg_core.inference.instances import MODES as INSTANCE_MODES
from keyseg_core.inference.refine import REFINE_METHODS
from keyseg_core.runtime.backends import BACKENDS

PRECISIONS = ("auto", "float32", "float16", "bfloat16")
RELIABILITIES = ("best_effort", "reliable")
DURABILITIES = ("volatile", "transient_local")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def _choice(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _int_range(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _device(value: Any) -> str | None:
    return None if _DEVICE.match(value) else "must be cpu, cuda or cuda:N"


def _finite(value: Any) -> str | None:
    return None if math.isfinite(value) else "must be a finite number"


def _non_negative(value: Any) -> str | None:
    return None if math.isfinite(value) and value >= 0 else "must be >= 0 (0 means no limit)"


def _positive(value: Any) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be > 0"


def _any(value: Any) -> str | None:
    return None


def _non_negative_int(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _track_gate(value: Any) -> str | None:
    return None if math.isfinite(value) and value >= 0 else "must be >= 0 (0: IoU matching only)"


def _unit_interval(value: Any) -> str | None:
    return None if math.isfinite(value) and 0.0 <= value < 1.0 else "must be >= 0 and < 1"


def _frame_id(value: Any) -> str | None:
    if value != value.strip() or value.startswith("/"):
        return "must be a tf2 frame id: no leading '/' or surrounding spaces (empty: the camera's frame)"
    return None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. `live` ones apply at once; the others on the next configure transition.

    `testing` ones exist for the test suite and fault drills (slow or failing frames on purpose);
    they are left out of config/keyseg.yaml and have no effect at their defaults.
    """

    name: str
    default: Any
    description: str
    check: Callable[[Any], str | None]
    live: bool = False
    testing: bool = False


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model", "",
        "Model to load: a saved checkpoint folder, a Hugging Face hub id, or config:<name> for a "
        "random-init builtin config (config:tiny in tests). Empty: keyseg_core's default model.",
        _any),
    ParamSpec(
        "backend", "torch",
        f"Backend of the per-frame graphs (vision tower, SAM encoder, mask decoder): "
        f"{', '.join(BACKENDS)}. A named backend that cannot load here fails the configure "
        "transition with the reason; auto tries tensorrt, compile (CUDA), onnxruntime, then torch "
        "and logs its choice.",
        _choice(*BACKENDS)),
    ParamSpec("device", "cpu", "Device to run the model on: cpu, cuda or cuda:N.", _device),
    ParamSpec(
        "precision", "auto",
        f"Model weights and compute precision: {', '.join(PRECISIONS)}. auto: bfloat16 on CUDA "
        "(TF32 for what stays float32), float16 on a GPU without bfloat16, float32 on the CPU.",
        _choice(*PRECISIONS)),
    ParamSpec(
        "cpu_fallback", False,
        "When the model does not fit in GPU memory at configure: true loads it on the CPU in float32 "
        "(one warning; slow), false fails the configure transition with the reason.",
        _any),
    ParamSpec(
        "category_gate", True,
        "Use the model's category detector, where it has one: the target is chosen among the "
        "categories in view, so mask and keyword name the same object. false: the fusion's own "
        "prompt, as in the paper.",
        _any),
    ParamSpec(
        "geometry_ranker", True,
        "With the category gate: re-rank its candidates by size and place as the query asks ('the "
        "smallest tool'), where the model has a geometry ranker (KeySeg-Tiny v2.3 does). false: the "
        "gate's own choice.",
        _any),
    ParamSpec(
        "presence", True,
        "Apply the model's presence calibration, where it has one: a query about something not in "
        "view gets an empty mask, zero detections, no keyword and an answer that says so. false: "
        "every query gets a mask, as in the paper.",
        _any),
    ParamSpec(
        "streaming", True,
        "Reason once per question, segment every frame: a new query (or reasoning_period, or a "
        "message on `reason`) starts a full pass on the current frame beside the frame loop; every "
        "frame runs only SAM with the cached reasoning. false: the whole model on every frame.",
        _any),
    ParamSpec(
        "reasoning_period", 0.0,
        "Streaming: seconds between reasoning passes on the current frame for the same query. 0: "
        "only on a new query or a message on `reason`.", _non_negative, live=True),
    ParamSpec(
        "previous_mask_prompt", False,
        "Streaming: give SAM the previous frame's mask as a dense prompt (torch and compile "
        "backends only).", _any, live=True),
    ParamSpec(
        "mask_threshold", 0.0,
        "Mask logit threshold: pixels whose logit is above it are in the mask (0.0 = p > 0.5).",
        _finite, live=True),
    ParamSpec(
        "refine", "grabcut",
        "Mask refinement: grabcut reshapes each mask to the frame's colour edges (about 30 ms a mask "
        "on a CPU core, frames refined at 320 px at most); none keeps the masks as SAM draws them.",
        _choice(*REFINE_METHODS), live=True),
    ParamSpec(
        "max_rate", 0.0,
        "Most frames per second to segment; newer frames replace waiting ones. 0: as fast as the "
        "model runs.", _non_negative, live=True),
    ParamSpec(
        "image_reliability", "best_effort",
        "QoS reliability of the image subscription: best_effort (sensor data, default) or "
        "reliable (needed for reliable-only publishers).", _choice(*RELIABILITIES)),
    ParamSpec(
        "queue_depth", 5,
        "QoS depth (keep last) of the image, depth and camera_info subscriptions. The node still "
        "serves only the newest frame; a depth of 1 lost frames before the callback in the soak.",
        _int_range(1, 100)),
    ParamSpec(
        "query_durability", "volatile",
        "QoS durability of the query subscription: volatile matches every publisher; "
        "transient_local also receives the last query published before this node started, but "
        "only from transient_local publishers.", _choice(*DURABILITIES)),
    ParamSpec(
        "compressed_input", False,
        "Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image.", _any),
    ParamSpec(
        "use_depth", True,
        "Subscribe to `depth` (16UC1 in mm or 32FC1 in m, registered to the colour image) and "
        "`camera_info`, matched to each frame by header stamp, and publish target_point, "
        "target_cloud and detections_3d. Without depth publishers nothing else changes.", _any),
    ParamSpec(
        "sync_slop", 0.05,
        "Seconds by which the stamps of a frame, its depth and its camera_info may differ to be "
        "matched (approximate-time synchronisation).", _positive),
    ParamSpec(
        "sync_queue_size", 10,
        "Messages of each input the synchroniser keeps while waiting for a match.", _int_range(1, 100)),
    ParamSpec(
        "max_depth", 10.0,
        "Depths beyond this many metres are invalid (as are 0 and NaN) and left out of the 3D outputs.",
        _positive, live=True),
    ParamSpec(
        "mask_erosion", 2,
        "Pixels eroded off the mask before the median depth and the 3D box are taken (borders mix "
        "in the background's depth).", _int_range(0, 50), live=True),
    ParamSpec(
        "min_points", 20,
        "Fewest valid depths on the (eroded) target for a 3D output; fewer: no 3D output for that "
        "frame.", _int_range(1, 1_000_000), live=True),
    ParamSpec(
        "cloud_decimation", 4,
        "target_cloud keeps the target's points on every n-th pixel row and column (1: all).",
        _int_range(1, 64), live=True),
    ParamSpec(
        "target_frame", "",
        "Frame to publish the 3D outputs in, looked up with tf2 at each frame's stamp. Empty: the "
        "colour image's own (optical) frame.", _frame_id, live=True),
    ParamSpec(
        "tf_timeout", 0.05, "Seconds to wait for the target_frame transform of a frame.",
        _non_negative, live=True),
    ParamSpec(
        "instance_mode", "mask",
        f"What counts as one detected instance: {', '.join(INSTANCE_MODES)}. mask: the answer's whole "
        "mask; components: each connected component of at least min_instance_area pixels; "
        "categories: each category in view holding category_share of the model's belief, with its "
        "own mask and class_id (a model with a category detector; else the whole mask).",
        _choice(*INSTANCE_MODES), live=True),
    ParamSpec(
        "category_share", 0.1,
        "instance_mode categories: the share of the model's (gated) belief a category in view needs "
        "to be an instance. 0.1 was chosen on generated val scenes (docs/results.md).",
        _unit_interval, live=True),
    ParamSpec(
        "min_instance_area", 20,
        "Smallest instance, in pixels; smaller ones (and smaller components) are not detections.",
        _int_range(1, 100_000_000), live=True),
    ParamSpec(
        "track_iou", 0.1,
        "Track ids: a mask keeps the id of the previous frame's mask it overlaps by more than this IoU "
        "(after moving it by its track's motion).", _unit_interval, live=True),
    ParamSpec(
        "track_gate", 4.0,
        "Track ids: a mask with the track's keyword that no longer overlaps it continues the track when its "
        "centre is within this many object sizes (the largest mask the track has had) of where the track's "
        "smoothed motion puts it (0: IoU only). 4.0 gives no id switch on true masks of generated "
        "sequences and, with lost_frames 30, none on the model's, whose target is missed or found only in "
        "part for a few frames at a time (docs/results.md).",
        _track_gate, live=True),
    ParamSpec(
        "lost_frames", 30,
        "Track ids: a target unmatched for this many answered frames in a row gets a new id when it "
        "comes back (a new query always does). 30 is ByteTrack's track buffer; 10 gave new ids to "
        "targets the model missed for a third of a second.", _int_range(1, 100_000), live=True),
    ParamSpec(
        "publish_overlay", True, "Publish the overlay image (mask drawn on the frame) for RViz.",
        _any, live=True),
    ParamSpec(
        "max_image_size", 4096,
        "Largest accepted frame width or height in pixels; larger frames are dropped and counted.",
        _int_range(16, 65536), live=True),
    ParamSpec(
        "max_query_length", 1000,
        "Longest accepted query in characters; longer queries are refused and counted.",
        _int_range(1, 1_000_000), live=True),
    ParamSpec(
        "diagnostics_period", 1.0, "Seconds between /diagnostics messages.", _positive),
    ParamSpec(
        "autostart", True,
        "Configure and activate at start-up. false: wait for a lifecycle manager "
        "(change_state service) to drive the transitions.", _any),
    ParamSpec(
        "test_frame_delay", 0.0,
        "TESTING ONLY. Seconds to hold every frame, reasoning pass and service request after the model ran, "
        "before publishing (keeps a frame mid-inference for shutdown tests). 0: off.",
        _non_negative, live=True, testing=True),
    ParamSpec(
        "test_inference_faults", 0,
        "TESTING ONLY. The next N model calls (predictions, reasoning passes, streamed frames) raise a "
        "simulated out-of-memory error (fault "
        "drills: the node must log it once and keep serving). 0: off.",
        _non_negative_int, live=True, testing=True),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def validation_error(name: str, value: Any) -> str | None:
    """A message naming the parameter when `value` is not acceptable for it, else None."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (use_sim_time, ...): rclpy checks those
    problem = spec.check(value)
    return None if problem is None else f"parameter '{name}' = {value!r} refused: {problem}"
