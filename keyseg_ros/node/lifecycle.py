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

This module is the ROS side: parameters, lifecycle transitions, subscriptions and the `segment`
service, and the order in which things stop. The model side (what the inference and reasoning
threads do with a frame or a request) is inference.py; what an answered frame publishes,
publishing.py; the units of work, work.py; failures told once, failures.py; the test-only fault
drills, drills.py. What stays here is one state machine: `_active`, the halt event, the mailbox
and the worker thread change together on every transition and at shutdown, and the order of
those changes (no publish after deactivate, waiting calls answered before the context goes) is
the node's contract, so it is kept in one class.

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

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Empty, String

from keyseg_ros.node import qos
from keyseg_ros.node.conversions import query_problem
from keyseg_ros.node.diagnostics import NodeStats, to_diagnostics
from keyseg_ros.node.drills import Drills
from keyseg_ros.node.inference import THROTTLE_S, Inference
from keyseg_ros.node.mailbox import Mailbox
from keyseg_ros.node.params import PARAMS, PARAMS_BY_NAME, validation_error
from keyseg_ros.node.publishing import ResultPublisher
from keyseg_ros.node.sync import SyncInput, subscribe_synchronised
from keyseg_ros.node.work import CameraFrame, Job
from keyseg_ros.srv import Segment

SHUTDOWN_TIMEOUT_S = 30.0  # longest wait for a frame in the model when the node stops


class KeySegNode(LifecycleNode):
    """Thin adapter between ROS topics and `keyseg_core.runtime.predictor.Predictor`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("keyseg_node", **kwargs)
        self._stats = NodeStats()
        self._mailbox: Mailbox[CameraFrame, Job] = Mailbox()
        self._worker: threading.Thread | None = None
        self._active = False
        self._stopping = threading.Event()  # the process is shutting down (never cleared)
        self._halt = threading.Event()  # the inference thread must stop (cleanup or shutdown)
        self._publish_lock = threading.Lock()  # `_active` changes never interleave with a publish
        self._outputs = ResultPublisher(self, self._publish_lock, self._serving, self._stats)
        self._calls_lock = threading.Lock()
        self._calls_waiting = 0  # `segment` callbacks waiting for the inference thread
        self._subs: list = []
        self._service = None
        self._service_group = MutuallyExclusiveCallbackGroup()
        # Validation runs for the initial (command line / YAML) values too: a bad one makes
        # declare_parameter raise, naming the parameter.
        self._declared = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                description=spec.description + ("" if spec.live else " (applied on configure)")))
        self._drills = Drills(self._param, self.get_logger())
        self._inference = Inference(self, self._stats, self._outputs, self._drills, self._stopping)
        self.busy = self._inference.busy  # set while a prediction (frame, reasoning or call) is in the model
        self._declared = True
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self._param("diagnostics_period"), self._publish_diagnostics)

    # ---- parameters ------------------------------------------------------------------------

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _serving(self) -> bool:
        """Outputs may be published (read under `_publish_lock`)."""
        return self._active and not self._stopping.is_set()

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
                self._drills.parameter_changed(p.name, p.value)
                if spec.live:
                    when = "applies now"
                elif self._inference.predictor is None:
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
            self._inference.load()
        except Exception as exc:  # noqa: BLE001 - any load error is a configure failure, told once
            self.get_logger().error(f"cannot load model '{self._param('model')}': {exc}")
            return TransitionCallbackReturn.FAILURE
        predictor = self._inference.predictor
        name = predictor.model_name
        self.get_logger().info(
            f"model '{name}' loaded ({predictor.backend.describe()}, {self._param('device')}, "
            f"{str(predictor.dtype).replace('torch.', '')}, "
            f"{'streaming' if self._param('streaming') else 'whole model on every frame'})")
        if predictor.untrained:
            self.get_logger().warning(
                f"model '{name}' has untrained (random) weights: masks and keywords are meaningless")
        self._outputs.create()
        self._mailbox = Mailbox()
        self._halt = threading.Event()
        self._inference.start_stream(self._halt)
        self._worker = threading.Thread(target=self._inference.work, args=(self._mailbox, self._halt),
                                        name="keyseg_inference", daemon=True)
        self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and serve; lifecycle publishers are enabled by the base class."""
        image_type, image_topic = (CompressedImage, "image/compressed") if self._param("compressed_input") \
            else (Image, "image")
        target3d = self._outputs.target3d
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
        self._inference.query_topic = query_sub.topic_name
        self._subs.append(self.create_subscription(Empty, "clear_query", self._on_clear, qos.queries(self)))
        self._subs.append(self.create_subscription(Empty, "reason", self._on_reason, qos.queries(self)))
        self._service = self.create_service(
            Segment, "segment", self._on_segment, callback_group=self._service_group)
        result = super().on_activate(state)
        with self._publish_lock:
            self._active = True
        self.get_logger().info(
            f"active: waiting for frames on '{image_sub.topic_name}' and a query on "
            f"'{query_sub.topic_name}'")
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
        self._outputs.destroy()
        predictor = self._inference.predictor
        name = predictor.model_name if predictor else ""
        self._inference.predictor = None
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
        stream = self._inference.stream
        if stream is not None:
            stream.close(timeout=0)
        self._outputs.close_3d(timeout=0)

    def idle(self) -> bool:
        """True once the inference thread has ended and no `segment` call is still waiting."""
        worker = self._worker
        stream = self._inference.stream
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
        inference = self._inference
        stream, inference.stream = inference.stream, None
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
        if not self._outputs.close_3d(timeout=SHUTDOWN_TIMEOUT_S):
            self.get_logger().warning(f"the 3D thread is still busy after {SHUTDOWN_TIMEOUT_S:g} s")

    # ---- callbacks (executor threads; never wait on the model) -----------------------------

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._stats.count("frames_received")
        if self._mailbox.put_frame(CameraFrame(msg, time.monotonic())):
            self._stats.count("frames_dropped")

    def _on_query(self, msg: String) -> None:
        self._stats.count("queries_received")
        problem = query_problem(msg.data, self._param("max_query_length"))
        if problem:
            self._stats.count("bad_queries", problem)
            self.get_logger().warning(
                f"refused a query on '{self._inference.query_topic}': {problem}; keeping the active one",
                throttle_duration_sec=THROTTLE_S)
            return
        query = msg.data.strip()
        if query != self._inference.query:
            self.get_logger().info(f"query: {query!r}", throttle_duration_sec=1.0)
        self._inference.query = query
        stream = self._inference.stream
        if stream is not None:
            stream.set_query(query)

    def _on_clear(self, msg: Empty) -> None:
        self._inference.query = None
        self._outputs.restart_tracks()
        stream = self._inference.stream
        if stream is not None:
            stream.clear()
        self.get_logger().info("query cleared: waiting for a new one")

    def _on_reason(self, msg: Empty) -> None:
        stream = self._inference.stream
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

    # ---- diagnostics -----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if self._stopping.is_set():
            return
        predictor = self._inference.predictor
        self._diag_pub.publish(to_diagnostics(
            self._stats.snapshot(),
            name=f"{self.get_fully_qualified_name()}: segmentation",
            model=predictor.model_name if predictor else self._param("model"),
            state="active" if self._active else ("inactive" if predictor else "unconfigured"),
            query=self._inference.query,
            untrained=bool(predictor and predictor.untrained),
            last_problem=self._stats.last_problem,
            stamp=self.get_clock().now().to_msg(),
            in_model=self.busy.is_set(),
        ))
