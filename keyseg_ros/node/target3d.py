"""keyseg_node's 3D stage: an answered frame + its depth and camera_info -> the target in 3D.

The colour frame goes through the model on its own; its depth and camera_info arrive through the
synchroniser (sync.py), usually before the model is done, sometimes after. Whichever of the two
comes second completes the pair, and the outputs (target_point, target_cloud, detections_3d) go
out then, in the frame's header (or target_frame's, at the frame's stamp). An answer whose depth
never comes is dropped after a few newer ones and counted.

In the node (`background=True`) the computation runs on a thread of its own: the tf2 lookup may
wait up to tf_timeout, and neither the inference thread nor an executor callback (which would
hold back the very /tf messages the lookup waits for) should wait with it. The newest pairs win
when it falls behind.

Every reason a frame gets no 3D output is counted in /diagnostics and said once in the log (again
only after 3D outputs were published in between, and at most every REPEAT_S seconds).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray

from keyseg_core.inference.geometry import target_geometry, transform_points
from keyseg_ros.node import detections
from keyseg_ros.node.depth import BadDepthError, depth_to_array, intrinsics
from keyseg_ros.node.diagnostics import NodeStats
from keyseg_ros.node.sync import stamp_ns
from keyseg_ros.node.transforms import IDENTITY, TransformError, lookup

PENDING = 8  # answers (and depth sets) kept while waiting for their other half
RECENT_S = 5.0  # a depth stream counts as present when a message came this recently
REPEAT_S = 30.0  # the same problem is logged at most this often


@dataclass
class Answer:
    """One published frame's instances, as the 3D stage needs them."""

    header: Header
    width: int
    height: int
    instances: list[np.ndarray]
    ids: list[str]
    keyword: str | list[str]  # the class_id of every instance, or one per instance
    score: float


@dataclass(frozen=True)
class Settings:
    """The node's 3D parameters, read again for every frame (they are live)."""

    max_depth: float
    erode_px: int
    min_points: int
    decimation: int
    target_frame: str
    tf_timeout: float


@dataclass
class Outputs:
    point: PointStamped
    cloud: PointCloud2
    detections: Detection3DArray


class ProblemLog:
    """One warning per problem key, until a success re-arms it (at most every REPEAT_S seconds)."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._last: dict[str, float] = {}

    def report(self, key: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if key in self._active or now - self._last.get(key, -REPEAT_S) < REPEAT_S:
                return
            self._active.add(key)
            self._last[key] = now
        self._logger.warning(message)

    def succeeded(self) -> None:
        with self._lock:
            self._active.clear()


class Target3D:
    """Pairs answers with synchronised depth sets, computes and hands over the 3D outputs."""

    def __init__(self, *, settings: Callable[[], Settings], publish: Callable[[Outputs], bool],
                 stats: NodeStats, logger, tf_buffer, depth_topic: str, info_topic: str,
                 background: bool = False) -> None:
        self._settings = settings
        self._publish = publish
        self._stats = stats
        self._problems = ProblemLog(logger)
        self._tf_buffer = tf_buffer
        self._depth_topic, self._info_topic = depth_topic, info_topic
        self._lock = threading.Lock()
        self._answers: dict[int, Answer] = {}
        self._depths: dict[int, tuple[Image, CameraInfo]] = {}
        self._last_depth: float | None = None
        self._last_info: float | None = None
        self._work: deque[tuple[Answer, Image, CameraInfo]] = deque(maxlen=2)
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="keyseg_3d", daemon=True) if background else None
        if self._thread is not None:
            self._thread.start()

    def close(self, timeout: float | None = None) -> bool:
        """Stop the 3D thread (a computation in progress finishes); True once it has ended."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is None or self._thread is threading.current_thread():
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._work and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._work.popleft()
            try:
                self._run(*job)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad frame
                self._stats.count("bad_depth", f"{type(exc).__name__}: {exc}")
                self._problems.report(type(exc).__name__, f"no 3D outputs: {type(exc).__name__}: {exc}")

    def _start(self, answer: Answer, depth: Image, info: CameraInfo) -> None:
        """Compute now, or hand the pair to the 3D thread."""
        if self._thread is None:
            self._run(answer, depth, info)
            return
        with self._wake:
            self._work.append((answer, depth, info))
            self._wake.notify()

    # ---- inputs (executor threads) ----

    def on_depth(self, msg: Image) -> None:
        self._last_depth = time.monotonic()
        self._stats.count("depth_received")

    def on_info(self, msg: CameraInfo) -> None:
        self._last_info = time.monotonic()

    def on_synced(self, image, depth: Image, info: CameraInfo) -> None:
        """A colour frame's depth and camera_info (the synchroniser's callback)."""
        stamp = stamp_ns(image)
        with self._lock:
            answer = self._answers.pop(stamp, None)
            if answer is None:
                self._depths[stamp] = (depth, info)
                _trim(self._depths)
        if answer is not None:
            self._start(answer, depth, info)

    # ---- answers (the inference or reasoning thread) ----

    def frame_answered(self, answer: Answer) -> None:
        stamp, dropped = stamp_ns(answer), 0
        with self._lock:
            pair = self._depths.pop(stamp, None)
            if pair is None:
                self._answers[stamp] = answer
                dropped = _trim(self._answers)
        if pair is not None:
            self._start(answer, *pair)
            return
        if self._present(self._last_depth) and not self._present(self._last_info):
            self._stats.count("bad_depth", "depth without camera_info")
            self._problems.report("no camera_info", (
                f"depth arrives on '{self._depth_topic}' but no camera_info on '{self._info_topic}': "
                "no 3D outputs until both come (2D outputs go on)"))
        if dropped and self._present(self._last_depth):
            self._stats.count("depth_sync_drops", "an answered frame got no depth within sync_slop")

    @staticmethod
    def _present(last: float | None) -> bool:
        return last is not None and time.monotonic() - last < RECENT_S

    # ---- the computation ----

    def _run(self, answer: Answer, depth: Image, info: CameraInfo) -> None:
        if not answer.instances:
            return  # nothing answered in this frame, so nothing to place
        s = self._settings()
        try:
            depth_m = depth_to_array(depth, answer.width, answer.height)
            k = intrinsics(info, answer.width, answer.height)
        except BadDepthError as exc:
            self._stats.count("bad_depth", str(exc))
            self._problems.report(str(exc), f"no 3D outputs: {exc} (2D outputs go on)")
            return
        kept, keywords = [], detections.per_instance(answer.keyword, len(answer.instances))
        for index, mask in enumerate(answer.instances):
            geometry, invalid = target_geometry(mask, depth_m, k, max_depth=s.max_depth, erode_px=s.erode_px,
                                                min_points=s.min_points, cloud_step=s.decimation)
            self._stats.add("invalid_depth_pixels", invalid)
            if geometry is not None:
                kept.append((geometry, answer.ids[index], keywords[index]))
            elif index == 0:
                self._stats.count("too_few_points", f"'{keywords[0]}': too few valid depth points")
                self._problems.report("too few points", (
                    f"no 3D output for a frame: fewer than min_points={s.min_points} valid depths on "
                    f"'{keywords[0]}' (depth 0, NaN or beyond max_depth={s.max_depth:g} m, or a "
                    f"mask thinner than 2 x mask_erosion={s.erode_px} px)"))
                return
        header, transform = answer.header, IDENTITY
        if s.target_frame:
            try:
                transform = lookup(self._tf_buffer, s.target_frame, header, s.tf_timeout)
            except TransformError as exc:
                self._stats.count("tf_failures", str(exc))
                self._problems.report("tf", f"no 3D outputs: {exc}")
                return
            header = Header(stamp=header.stamp, frame_id=s.target_frame)

        def moved(points) -> np.ndarray:
            return transform_points(np.asarray(points, np.float64).reshape(-1, 3), transform.translation,
                                    transform.rotation)

        geometries = [g for g, _, _ in kept]
        centres = moved([g.centre for g in geometries])
        outputs = Outputs(
            point=detections.point_stamped(header, centres[0]),
            cloud=detections.point_cloud(header, moved(geometries[0].cloud)),
            detections=detections.detections_3d(
                header, geometries, centres, moved([g.box_centre for g in geometries]), transform.rotation,
                [i for _, i, _ in kept], [k for _, _, k in kept], answer.score))
        if self._publish(outputs):
            self._stats.count("targets_3d")
            self._problems.succeeded()


def _trim(store: dict[int, object]) -> int:
    """Drop the oldest entries beyond PENDING; how many were dropped."""
    dropped = 0
    while len(store) > PENDING:
        del store[min(store)]
        dropped += 1
    return dropped
