"""keyseg_node: a lifecycle node that segments camera frames for the active text query.

configure   declare-time parameters are read, the model is loaded, publishers are created
activate    image/query subscriptions and the `segment` service come up; results are published
deactivate  subscriptions and service go away; the model stays loaded
cleanup     the model is released

Inference runs on its own thread. Callbacks only store the newest frame (older waiting ones are
dropped and counted) or the new query, so the executor never waits on the model.

Streaming (parameter `streaming`, the default): a new query (also every `reasoning_period` seconds
and on a message on `reason`) starts a full KeySeg pass on the current frame on a second thread, the
reasoning thread; every frame runs only SAM's encoder and decoder with the reasoning's S_hat, so
frames never wait on the LLM. A query that arrives while the reasoning thread works replaces the
pending one. The reasoned frame's own result is published too (`reasoning_fresh`), unless a newer
frame was published meanwhile; other results carry `reasoning_age`, measured between header stamps
(so it holds under bag replay and sim time). After a new query, frames get no result until its
first reasoning is ready (counted as frames_awaiting_reasoning).

Every answered frame also gets detections (one per instance, with a track id that follows the
target while it moves: keyseg_core.inference.tracking) and, with depth, the target in 3D (target3d.py).

Shutdown (SIGINT or SIGTERM, in any state): the signal only sets a flag. The main loop then stops
the inference thread and joins it, lets waiting `segment` calls answer, and only then destroys the
node and shuts the ROS context down, so nothing publishes on a dead context. Exit code 0.

Topics (relative, so launch files can remap or namespace them):
  in   image (sensor_msgs/Image) or image/compressed, depth (sensor_msgs/Image 16UC1 or 32FC1),
       camera_info (sensor_msgs/CameraInfo), query (std_msgs/String),
       clear_query (std_msgs/Empty), reason (std_msgs/Empty: reason again on the next frame)
  out  mask (sensor_msgs/Image mono8), keyword (keyseg_ros/KeywordStamped),
       detections (vision_msgs/Detection2DArray), result (keyseg_ros/SegmentationResult),
       overlay (sensor_msgs/Image rgb8), target_point (geometry_msgs/PointStamped),
       target_cloud (sensor_msgs/PointCloud2), detections_3d (vision_msgs/Detection3DArray),
       /diagnostics (diagnostic_msgs/DiagnosticArray)
  srv  segment (keyseg_ros/Segment)
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Empty, Header, String
from vision_msgs.msg import Detection2DArray, Detection3DArray

from keyseg_core.inference.instances import split_instances
from keyseg_core.inference.tracking import MaskTracker
from keyseg_core.inference.overlay import overlay as draw_overlay
from keyseg_ros.node import conversions, detections, qos, transforms
from keyseg_ros.node.diagnostics import NodeStats, to_diagnostics
from keyseg_ros.node.mailbox import Mailbox
from keyseg_ros.msg import KeywordStamped, SegmentationResult
from keyseg_ros.node.params import PARAMS, PARAMS_BY_NAME, validation_error
from keyseg_ros.srv import Segment
from keyseg_ros.node.sync import SyncInput, subscribe_synchronised
from keyseg_ros.node.target3d import Answer, Outputs, Settings, Target3D

THROTTLE_S = 2.0  # at most one warning of each kind per this many seconds
SHUTDOWN_TIMEOUT_S = 30.0  # longest wait for a frame in the model when the node stops


@dataclass
class Frame:
    """A camera message waiting for the model, with the time it arrived."""

    msg: Image | CompressedImage
    received: float

    @property
    def time(self) -> float:
        """The frame's time for the streaming clock: its header stamp (bag replay and sim time
        included), or its arrival time when it is not stamped."""
        stamp = self.msg.header.stamp
        return stamp.sec + stamp.nanosec * 1e-9 if stamp.sec or stamp.nanosec else self.received


@dataclass
class Job:
    """A `segment` service request waiting for the model.

    The worker fills `response` and sets `done`, unless the waiting callback gave up first
    (`abandoned`: deactivate or shutdown); `lock` makes the two exclusive, so a response is never
    changed after the callback returned it.
    """

    image: Image
    queries: list[str]
    response: Segment.Response
    done: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self, success: bool, message: str, results: list[SegmentationResult] | None = None) -> None:
        with self.lock:
            if self.abandoned or self.done.is_set():
                return
            self.response.success, self.response.message = success, message
            if results:
                self.response.result, self.response.results = results[0], results
            self.done.set()

    def abandon(self, message: str) -> None:
        with self.lock:
            if self.done.is_set():
                return
            self.abandoned = True
            self.response.success, self.response.message = False, message
            self.done.set()


class SimulatedOutOfMemory(RuntimeError):
    """Raised by the `test_inference_faults` drill when torch is not importable."""


def _out_of_memory_error() -> Exception:
    """An out-of-memory error as torch raises it on a GPU (parameter `test_inference_faults`)."""
    message = ("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by the "
               "test_inference_faults parameter)")
    try:
        import torch

        return torch.OutOfMemoryError(message)
    except (ImportError, AttributeError):
        return SimulatedOutOfMemory(message)


class FailureLog:
    """Logs a run of failures once: the first with its cause, then one line when it is over.

    Failures of the same kind (exception type) that follow are only counted (diagnostics keep
    counting them); a different kind is logged as a new run.
    """

    def __init__(self, logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._kind: str | None = None
        self._count = 0

    def failed(self, what: str, exc: BaseException, hint: str = "") -> None:
        kind = type(exc).__name__
        with self._lock:
            self._count += 1
            if kind == self._kind:
                return
            self._kind, self._count = kind, 1
        self._logger.error(
            f"{what} failed: {kind}: {exc}{hint}. The node keeps serving; further {kind} errors "
            "are counted in diagnostics (inference_errors) and logged again once frames succeed")

    def succeeded(self) -> None:
        with self._lock:
            if self._kind is None:
                return
            kind, count, self._kind, self._count = self._kind, self._count, None, 0
        self._logger.info(f"inference recovered after {count} failed prediction(s) ({kind})")


def _free_accelerator_memory(exc: BaseException) -> str:
    """After an out-of-memory error, give the CUDA allocator's cached blocks back; a note for the
    log line saying so ("" when there was nothing to do)."""
    if "OutOfMemory" not in type(exc).__name__:
        return ""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            return " (freed the CUDA allocator's cached memory)"
    except Exception:  # noqa: BLE001 - best effort; the error itself is already reported
        pass
    return ""


def query_problem(text: str, max_length: int) -> str | None:
    """Why a query is refused, or None. Invalid UTF-8 reaches rclpy as U+FFFD replacements."""
    if not text.strip():
        return "empty or whitespace-only query"
    if "\ufffd" in text:
        return "query is not valid UTF-8 (undecodable bytes)"
    if len(text) > max_length:
        return f"query has {len(text)} characters, more than max_query_length={max_length}"
    return None


class KeySegNode(LifecycleNode):
    """Thin adapter between ROS topics and `keyseg_core.inference.predictor.Predictor`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("keyseg_node", **kwargs)
        self._stats = NodeStats()
        self._mailbox: Mailbox[Frame, Job] = Mailbox()
        self._query: str | None = None
        self._predictor = None
        self._worker: threading.Thread | None = None
        self._active = False
        self._stopping = threading.Event()  # the process is shutting down (never cleared)
        self._halt = threading.Event()  # the inference thread must stop (cleanup or shutdown)
        self._publish_lock = threading.Lock()  # `_active` changes never interleave with a publish
        self._calls_lock = threading.Lock()
        self._calls_waiting = 0  # `segment` callbacks waiting for the inference thread
        self._faults_left = 0  # test_inference_faults drill
        self._failures = FailureLog(self.get_logger())
        self.busy = threading.Event()  # set while a prediction (frame, reasoning or call) is in the model
        self._busy_count = 0
        self._busy_lock = threading.Lock()
        self._stream = None  # keyseg_core.inference.stream.StreamingSegmenter while configured with streaming
        self._last_published = -1.0  # arrival time of the newest frame published
        self._mask_prompt_warned = False
        self._subs: list = []
        self._query_topic = self.resolve_topic_name("query")  # for messages; set again on activate
        self._tracker: MaskTracker | None = None
        self._tracked_query: str | None = None  # the query the tracker's ids belong to
        self._target3d: Target3D | None = None
        self._tf_buffer = self._tf_listener = None
        self._service = None
        self._service_group = MutuallyExclusiveCallbackGroup()
        # Validation runs for the initial (command line / YAML) values too: a bad one makes
        # declare_parameter raise, naming the parameter.
        self._declared = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                description=spec.description + ("" if spec.live else " (applied on configure)")))
        self._declared = True
        self._faults_left = self._param("test_inference_faults")
        for spec in PARAMS:
            if spec.testing and self._param(spec.name) != spec.default:
                self.get_logger().warning(
                    f"testing parameter '{spec.name}' = {self._param(spec.name)!r} is set: "
                    "frames are slowed down or fail on purpose")
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self._param("diagnostics_period"), self._publish_diagnostics)

    # ---- parameters ------------------------------------------------------------------------

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            problem = validation_error(p.name, p.value)
            if problem:
                self.get_logger().error(problem)
                return SetParametersResult(successful=False, reason=problem)
        if self._declared:  # a change at run time (not the declaration): say what and when
            for p in params:
                spec = PARAMS_BY_NAME.get(p.name)
                old = self.get_parameter(p.name).value if self.has_parameter(p.name) else None
                if spec is None or old == p.value:
                    continue
                if p.name == "test_inference_faults":
                    self._faults_left = p.value
                if spec.live:
                    when = "applies now"
                elif self._predictor is None:
                    when = "applies at the next configure"
                else:
                    when = "applies after a reload (deactivate, cleanup, configure, activate)"
                self.get_logger().info(
                    f"parameter '{p.name}' changed from {old!r} to {p.value!r} by a "
                    f"set_parameters request: {when}")
        return SetParametersResult(successful=True)

    # ---- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create publishers; FAILURE (with the reason logged) if it can't."""
        try:
            self._predictor = self._load_predictor()
        except Exception as exc:  # noqa: BLE001 - any load error is a configure failure, told once
            self.get_logger().error(f"cannot load model '{self._param('model')}': {exc}")
            return TransitionCallbackReturn.FAILURE
        name = self._predictor.model_name
        predictor = self._predictor
        self.get_logger().info(
            f"model '{name}' loaded ({predictor.backend.describe()}, {self._param('device')}, "
            f"{str(predictor.dtype).replace('torch.', '')}, "
            f"{'streaming' if self._param('streaming') else 'whole model on every frame'})")
        if self._predictor.untrained:
            self.get_logger().warning(
                f"model '{name}' has untrained (random) weights: masks and keywords are meaningless")
        self._mask_pub = self.create_lifecycle_publisher(Image, "mask", qos.results())
        self._keyword_pub = self.create_lifecycle_publisher(KeywordStamped, "keyword", qos.results())
        self._result_pub = self.create_lifecycle_publisher(SegmentationResult, "result", qos.results())
        self._overlay_pub = self.create_lifecycle_publisher(Image, "overlay", qos.results())
        self._detections_pub = self.create_lifecycle_publisher(Detection2DArray, "detections", qos.results())
        self._point_pub = self.create_lifecycle_publisher(PointStamped, "target_point", qos.results())
        self._cloud_pub = self.create_lifecycle_publisher(PointCloud2, "target_cloud", qos.results())
        self._detections_3d_pub = self.create_lifecycle_publisher(Detection3DArray, "detections_3d", qos.results())
        self._tracker = MaskTracker(self._param("track_iou"), self._param("lost_frames"))
        self._tracked_query = None
        self._target3d = None
        if self._param("use_depth"):
            self._tf_buffer, self._tf_listener = transforms.make_buffer(self)
            self._target3d = Target3D(
                settings=self._settings_3d, publish=self._publish_3d, stats=self._stats,
                logger=self.get_logger(), tf_buffer=self._tf_buffer,
                depth_topic=self.resolve_topic_name("depth"), info_topic=self.resolve_topic_name("camera_info"),
                background=True)
        self._mailbox = Mailbox()
        self._halt = threading.Event()
        self._last_published = -1.0
        self._stream = self._make_stream(self._halt) if self._param("streaming") else None
        self._worker = threading.Thread(target=self._work, args=(self._mailbox, self._halt),
                                        name="keyseg_inference", daemon=True)
        self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    def _load_predictor(self):
        """`Predictor.from_pretrained` with this node's parameters; imported here (torch is slow).

        An unavailable backend (tensorrt) is refused by keyseg_core with directions; that message
        becomes the configure failure.
        """
        from keyseg_core.inference.predictor import Predictor

        return Predictor.from_pretrained(
            self._param("model") or None, device=self._param("device"),
            dtype=self._param("precision"), mask_threshold=self._param("mask_threshold"),
            backend=self._param("backend"), cpu_fallback=self._param("cpu_fallback"))

    def _make_stream(self, halt: threading.Event):
        """The streaming driver: reasoning on its own thread, through this node's fault drill and
        busy flag; results of reasoned frames are published from there."""
        from keyseg_core.inference.stream import StreamingSegmenter

        stream = StreamingSegmenter(
            period_s=self._param("reasoning_period"), previous_mask=self._param("previous_mask_prompt"),
            background=True, device=self._predictor.device,
            reason=lambda rgb, query: self._in_model(lambda: self._predictor.reason(rgb, query), halt),
            segment=lambda rgb, reasoning, prompt: self._in_model(
                lambda: self._predictor.segment(rgb, reasoning, prompt), halt),
            on_reasoned=self._on_reasoned, on_error=self._on_reasoning_error)
        if self._query is not None:
            stream.set_query(self._query)
        return stream

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and serve; lifecycle publishers are enabled by the base class."""
        image_type, image_topic = (CompressedImage, "image/compressed") if self._param("compressed_input") \
            else (Image, "image")
        target3d = self._target3d
        if target3d is None:
            self._subs.append(self.create_subscription(image_type, image_topic, self._on_image, qos.images(self)))
        else:
            subs, synchroniser = subscribe_synchronised(self, [
                SyncInput(image_type, image_topic, qos.images(self), self._on_image),
                SyncInput(Image, "depth", qos.images(self), target3d.on_depth),
                SyncInput(CameraInfo, "camera_info", qos.images(self), target3d.on_info)],
                queue_size=self._param("sync_queue_size"), slop=self._param("sync_slop"),
                on_set=target3d.on_synced)
            self._subs += subs
            self.get_logger().info(
                f"depth on '{subs[1].topic_name}' and camera_info on '{subs[2].topic_name}' are matched "
                f"to frames by {synchroniser}")
        image_sub = self._subs[0]
        query_sub = self.create_subscription(String, "query", self._on_query, qos.queries(self))
        self._subs.append(query_sub)
        self._query_topic = query_sub.topic_name
        self._subs.append(self.create_subscription(Empty, "clear_query", self._on_clear, qos.queries(self)))
        self._subs.append(self.create_subscription(Empty, "reason", self._on_reason, qos.queries(self)))
        self._service = self.create_service(
            Segment, "segment", self._on_segment, callback_group=self._service_group)
        result = super().on_activate(state)
        with self._publish_lock:
            self._active = True
        self.get_logger().info(
            f"active: waiting for frames on '{image_sub.topic_name}' and a query on "
            f"'{self._query_topic}'")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._publish_lock:
            self._active = False
        self._stop_serving()
        self.get_logger().info("deactivated (lifecycle transition): subscriptions and the segment "
                               "service removed; the model stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for pub in (self._mask_pub, self._keyword_pub, self._result_pub, self._overlay_pub,
                    self._detections_pub, self._point_pub, self._cloud_pub, self._detections_3d_pub):
            self.destroy_lifecycle_publisher(pub)
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        self._tf_buffer = self._tf_listener = self._target3d = self._tracker = None
        name = self._predictor.model_name if self._predictor else ""
        self._predictor = None
        self.get_logger().info(f"cleaned up (lifecycle transition): model '{name}' released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def begin_shutdown(self) -> None:
        """First step of stopping the process (idempotent): no more publishing, the inference
        thread is told to stop, waiting `segment` calls are answered. Does not block."""
        self._stopping.set()
        with self._publish_lock:
            self._active = False
        self._halt.set()
        self._mailbox.close()
        stream = self._stream
        if stream is not None:
            stream.close(timeout=0)
        target3d = self._target3d
        if target3d is not None:
            target3d.close(timeout=0)

    def idle(self) -> bool:
        """True once the inference thread has ended and no `segment` call is still waiting."""
        worker = self._worker
        stream = self._stream
        with self._calls_lock:
            waiting = self._calls_waiting
        reasoning = stream is not None and stream.reasoning_in_progress
        return (worker is None or not worker.is_alive()) and waiting == 0 and not reasoning

    def close(self) -> None:
        """Stop serving and the inference thread (idempotent); called on any way out."""
        self.begin_shutdown()
        self._stop_serving()
        self._stop_worker()

    def _stop_serving(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        self._mailbox.clear_frame()

    def _stop_worker(self) -> None:
        self._halt.set()
        self._mailbox.close()
        worker, self._worker = self._worker, None
        stream, self._stream = self._stream, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=SHUTDOWN_TIMEOUT_S)
            if worker.is_alive():
                self.get_logger().warning(
                    f"the inference thread is still in the model after {SHUTDOWN_TIMEOUT_S:g} s; "
                    "its result will be discarded")
        if stream is not None and not stream.close(timeout=SHUTDOWN_TIMEOUT_S):
            self.get_logger().warning(
                f"the reasoning thread is still in the model after {SHUTDOWN_TIMEOUT_S:g} s; "
                "its result will be discarded")
        target3d = self._target3d
        if target3d is not None and not target3d.close(timeout=SHUTDOWN_TIMEOUT_S):
            self.get_logger().warning(f"the 3D thread is still busy after {SHUTDOWN_TIMEOUT_S:g} s")

    # ---- callbacks (executor threads; never wait on the model) -----------------------------

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._stats.count("frames_received")
        if self._mailbox.put_frame(Frame(msg, time.monotonic())):
            self._stats.count("frames_dropped")

    def _on_query(self, msg: String) -> None:
        self._stats.count("queries_received")
        problem = query_problem(msg.data, self._param("max_query_length"))
        if problem:
            self._stats.count("bad_queries", problem)
            self.get_logger().warning(
                f"refused a query on '{self._query_topic}': {problem}; keeping the active one",
                throttle_duration_sec=THROTTLE_S)
            return
        query = msg.data.strip()
        if query != self._query:
            self.get_logger().info(f"query: {query!r}", throttle_duration_sec=1.0)
        self._query = query
        stream = self._stream
        if stream is not None:
            stream.set_query(query)

    def _on_clear(self, msg: Empty) -> None:
        self._query = None
        with self._publish_lock:
            self._tracked_query = None  # the same query asked again starts new tracks
        stream = self._stream
        if stream is not None:
            stream.clear()
        self.get_logger().info("query cleared: waiting for a new one")

    def _on_reason(self, msg: Empty) -> None:
        stream = self._stream
        if stream is not None:
            stream.request()

    def _on_segment(self, request: Segment.Request, response: Segment.Response) -> Segment.Response:
        """One-shot service; waits (in its own callback group) for the inference thread."""
        self._stats.count("service_calls")
        queries = ([request.query] if request.query.strip() or not request.queries else []) + list(request.queries)
        for i, text in enumerate(queries):
            problem = query_problem(text, self._param("max_query_length"))
            if problem:
                self._stats.count("bad_queries", problem)
                where = f"query {i + 1} of {len(queries)}: " if len(queries) > 1 else ""
                response.success, response.message = False, where + problem
                return response
        job = Job(request.image, [q.strip() for q in queries], response)
        with self._calls_lock:
            self._calls_waiting += 1
        try:
            halt = self._halt
            if self._stopping.is_set() or not self._active:
                job.abandon("node is shutting down" if self._stopping.is_set() else "node is not active")
                return response
            self._mailbox.put_job(job)
            while not job.done.wait(0.05):
                if self._stopping.is_set() or halt.is_set() or not self._active:
                    job.abandon("node is shutting down" if self._stopping.is_set()
                                else "node was deactivated before the request was served")
            return response
        finally:
            with self._calls_lock:
                self._calls_waiting -= 1

    # ---- inference thread ------------------------------------------------------------------

    def _work(self, mailbox: Mailbox, halt: threading.Event) -> None:
        """Serve jobs, then the newest frame, at most `max_rate` frames per second.

        Never raises: an unexpected error in one item is logged (once per kind) and counted.
        """
        last_start = 0.0
        while not halt.is_set():
            max_rate = self._param("max_rate")
            not_before = last_start + 1.0 / max_rate if max_rate > 0 else 0.0
            item = mailbox.get(timeout=0.5, frames_not_before=not_before)
            if item is None:
                if mailbox.closed:
                    break
                continue
            try:
                if isinstance(item, Job):
                    self._serve_job(item, halt)
                else:
                    last_start = time.monotonic()
                    self._serve_frame(item, halt)
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                if isinstance(item, Job):
                    item.finish(False, f"failed: {type(exc).__name__}: {exc}")
                if self._stopping.is_set():
                    break
                self._stats.count("inference_errors", f"{type(exc).__name__}: {exc}")
                self._failures.failed("serving a frame", exc)
        for job in mailbox.drain_jobs():
            job.abandon("node is shutting down" if self._stopping.is_set()
                        else "node was cleaned up before the request was served")

    def _in_model(self, call, halt: threading.Event):
        """One model call (a prediction, a reasoning pass or a segmentation) under the busy flag,
        the fault drill and the test delay."""
        if self._faults_left > 0:
            self._faults_left -= 1
            raise _out_of_memory_error()
        with self._busy_lock:
            self._busy_count += 1
            self.busy.set()
        try:
            self._predictor.mask_threshold = self._param("mask_threshold")
            result = call()
            delay = self._param("test_frame_delay")
            if delay > 0:
                halt.wait(delay)  # testing only: hold the frame mid-inference; shutdown cuts it short
            return result
        finally:
            with self._busy_lock:
                self._busy_count -= 1
                if not self._busy_count:
                    self.busy.clear()

    def _report_failure(self, exc: BaseException) -> None:
        self._stats.count("inference_errors", f"{type(exc).__name__}: {exc}")
        self._failures.failed("inference", exc, _free_accelerator_memory(exc))

    def _predict_or_report(self, rgb, queries: list[str], halt: threading.Event):
        """(predictions, None), or (None, error) after counting and logging (once per run) the error.
        Several queries on one image run as one batch (the image is encoded once)."""
        predictor = self._predictor
        try:
            if len(queries) == 1:
                predictions = [self._in_model(lambda: predictor.predict(rgb, queries[0]), halt)]
            else:
                frame = predictor.encode_frame(rgb)
                predictions = self._in_model(lambda: predictor.predict_queries(queries, frame), halt)
        except Exception as exc:  # noqa: BLE001 - a failing frame must not stop the stream
            self._report_failure(exc)
            return None, exc
        self._failures.succeeded()
        return predictions, None

    def _serve_frame(self, frame: Frame, halt: threading.Event) -> None:
        query = self._query
        if query is None:
            self._stats.count("frames_without_query")
            self.get_logger().warning(
                f"frames arrive but there is no query yet: publish one on '{self._query_topic}'",
                throttle_duration_sec=10.0)
            return
        start = time.monotonic()
        try:
            rgb = self._decode(frame.msg)
        except conversions.BadImageError as exc:
            self._stats.count("bad_frames", str(exc))
            self.get_logger().warning(f"dropped a frame: {exc}", throttle_duration_sec=THROTTLE_S)
            return
        decoded = time.monotonic()
        node_ms = {"queue_wait": (start - frame.received) * 1e3,
                   "decode_image": (decoded - start) * 1e3}
        stream = self._stream
        if stream is not None:
            self._apply_stream_params(stream)
            try:
                streamed = stream.step(rgb, now=frame.time, tag=(frame, rgb, node_ms))
            except Exception as exc:  # noqa: BLE001 - a failing frame must not stop the stream
                self._report_failure(exc)
                return
            if streamed is None:
                self._stats.count("frames_awaiting_reasoning")
                return
            self._failures.succeeded()
            prediction, query = streamed.prediction, streamed.query
        else:
            predictions, _ = self._predict_or_report(rgb, [query], halt)
            if predictions is None:
                return
            prediction = predictions[0]
        self._publish_frame(frame, rgb, query, prediction, node_ms)

    def _apply_stream_params(self, stream) -> None:
        """The live streaming parameters (a `ros2 param set` applies at the next frame)."""
        stream.period_s = self._param("reasoning_period")
        wanted = self._param("previous_mask_prompt")
        accepted = self._predictor.segmenter.accepts_mask_prompt
        if wanted and not accepted and not self._mask_prompt_warned:
            self._mask_prompt_warned = True
            self.get_logger().warning(
                f"previous_mask_prompt is set but backend '{self._predictor.backend.name}' takes no mask "
                "prompt (torch and compile do); segmenting without it")
        stream.previous_mask = wanted and accepted

    def _publish_frame(self, frame: Frame, rgb, query: str, prediction, node_ms: dict) -> None:
        if self._publish(frame.msg.header, rgb, query, prediction, node_ms, frame.received):
            self._stats.frame_done((time.monotonic() - frame.received) * 1e3,
                                   prediction.timings_ms.get("total", 0.0))

    def _on_reasoned(self, streamed) -> None:
        """Reasoning thread: a reasoning pass is done; publish its own frame (a full pass)."""
        self._stats.count("reasonings")
        self._failures.succeeded()
        frame, rgb, node_ms = streamed.tag
        self._publish_frame(frame, rgb, streamed.query, streamed.prediction, node_ms)

    def _on_reasoning_error(self, exc: BaseException) -> None:
        """Reasoning thread: a reasoning pass failed; the next frame tries again."""
        if not self._stopping.is_set():
            self._report_failure(exc)

    def _decode(self, msg: Image | CompressedImage):
        max_size = self._param("max_image_size")
        if isinstance(msg, CompressedImage):
            return conversions.compressed_to_rgb(msg, max_size)
        return conversions.image_to_rgb(msg, max_size)

    def _publish(self, header: Header, rgb, query: str, prediction, node_ms: dict, received: float) -> bool:
        """Publish one frame's outputs unless the node stopped serving meanwhile or a newer frame
        was published already (the reasoning thread finishes late); True if sent. Its instances
        then go to the 3D stage.

        Holds `_publish_lock`, so deactivate and shutdown wait for a publish in progress and no
        publish starts after them (a shut-down context makes publish raise). Track ids are given
        under it too, so they follow the order frames are published in.
        """
        mask = conversions.mask_to_image(prediction.mask, header)
        result = conversions.to_result(
            prediction, header=header, query=query, mask=mask,
            model=self._predictor.model_name, node_timings_ms=node_ms)
        keyword = KeywordStamped(header=header, keyword=prediction.keyword,
                                 probability=float(prediction.keyword_prob), query=query)
        instances = split_instances(prediction.mask, self._param("instance_mode"),
                                    self._param("min_instance_area"))
        overlay = None
        if self._param("publish_overlay") and self._overlay_pub.get_subscription_count():
            if not prediction.present:
                label = f"not here: {query}"
            else:
                label = f"{prediction.keyword} ({prediction.score:.2f})" if prediction.keyword else query
            overlay = conversions.rgb_to_image(draw_overlay(rgb, prediction.mask, label), header)
        with self._publish_lock:
            if not self._active or self._stopping.is_set() or received <= self._last_published:
                return False
            self._last_published = received
            ids = self._track(query, instances)
            self._mask_pub.publish(mask)
            self._keyword_pub.publish(keyword)
            self._detections_pub.publish(detections.detections_2d(
                header, instances, ids, prediction.keyword, prediction.score))
            self._result_pub.publish(result)
            if overlay is not None:
                self._overlay_pub.publish(overlay)
        target3d = self._target3d
        if target3d is not None:
            target3d.frame_answered(Answer(header, int(prediction.mask.shape[1]), int(prediction.mask.shape[0]),
                                           instances, ids, prediction.keyword, float(prediction.score)))
        return True

    def _track(self, query: str, instances: list) -> list[str]:
        """Track ids of this frame's instances; a new query starts new tracks."""
        tracker = self._tracker
        if query != self._tracked_query:
            tracker.reset()
            self._tracked_query = query
        tracker.iou_threshold, tracker.lost_frames = self._param("track_iou"), self._param("lost_frames")
        return tracker.update(instances)

    def _settings_3d(self) -> Settings:
        return Settings(max_depth=self._param("max_depth"), erode_px=self._param("mask_erosion"),
                        min_points=self._param("min_points"), decimation=self._param("cloud_decimation"),
                        target_frame=self._param("target_frame"), tf_timeout=self._param("tf_timeout"))

    def _publish_3d(self, outputs: Outputs) -> bool:
        """The 3D stage's outputs, under the same rules as `_publish`; True if sent."""
        with self._publish_lock:
            if not self._active or self._stopping.is_set():
                return False
            self._point_pub.publish(outputs.point)
            self._cloud_pub.publish(outputs.cloud)
            self._detections_3d_pub.publish(outputs.detections)
        return True

    def _serve_job(self, job: Job, halt: threading.Event) -> None:
        start = time.monotonic()
        try:
            rgb = conversions.image_to_rgb(job.image, self._param("max_image_size"))
        except conversions.BadImageError as exc:
            self._stats.count("bad_frames", str(exc))
            job.finish(False, f"bad image: {exc}")
            return
        decoded = time.monotonic()
        predictions, exc = self._predict_or_report(rgb, job.queries, halt)
        if predictions is None:
            job.finish(False, f"inference failed: {type(exc).__name__}: {exc}")
            return
        results = [conversions.to_result(
            prediction, header=job.image.header, query=query,
            mask=conversions.mask_to_image(prediction.mask, job.image.header),
            model=self._predictor.model_name,
            node_timings_ms={"decode_image": (decoded - start) * 1e3})
            for query, prediction in zip(job.queries, predictions)]
        job.finish(True, "", results)

    # ---- diagnostics -----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if self._stopping.is_set():
            return
        predictor = self._predictor
        self._diag_pub.publish(to_diagnostics(
            self._stats.snapshot(),
            name=f"{self.get_fully_qualified_name()}: segmentation",
            model=predictor.model_name if predictor else self._param("model"),
            state="active" if self._active else ("inactive" if predictor else "unconfigured"),
            query=self._query,
            untrained=bool(predictor and predictor.untrained),
            last_problem=self._stats.last_problem,
            stamp=self.get_clock().now().to_msg(),
            in_model=self.busy.is_set(),
        ))
