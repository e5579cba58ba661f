"""keyseg_node: a lifecycle node that segments camera frames for the active text query.

configure   declare-time parameters are read, the model is loaded, publishers are created
activate    image/query subscriptions and the `segment` service come up; results are published
deactivate  subscriptions and service go away; the model stays loaded
cleanup     the model is released

Inference runs on its own thread. Callbacks only store the newest frame (older waiting ones are
dropped and counted) or the new query, so the executor never waits on the model.

Topics (relative, so launch files can remap or namespace them):
  in   image (sensor_msgs/Image) or image/compressed, query (std_msgs/String),
       clear_query (std_msgs/Empty)
  out  mask (sensor_msgs/Image mono8), keyword (std_msgs/String),
       result (keyseg_ros/SegmentationResult), overlay (sensor_msgs/Image rgb8),
       /diagnostics (diagnostic_msgs/DiagnosticArray)
  srv  segment (keyseg_ros/Segment)
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty, Header, String

from keyseg_ros import conversions, qos
from keyseg_ros.diagnostics import NodeStats, to_diagnostics
from keyseg_ros.mailbox import Mailbox
from keyseg_ros.msg import SegmentationResult
from keyseg_core.visualize import overlay as draw_overlay
from keyseg_ros.params import PARAMS, validation_error
from keyseg_ros.srv import Segment

THROTTLE_S = 2.0  # at most one warning of each kind per this many seconds


@dataclass
class Frame:
    """A camera message waiting for the model, with the time it arrived."""

    msg: Image | CompressedImage
    received: float


@dataclass
class Job:
    """A `segment` service request waiting for the model; the worker fills the response."""

    image: Image
    query: str
    response: Segment.Response
    done: threading.Event = field(default_factory=threading.Event)


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
    """Thin adapter between ROS topics and `keyseg_core.predictor.Predictor`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("keyseg_node", **kwargs)
        # Validation runs for the initial (command line / YAML) values too: a bad one makes
        # declare_parameter raise, naming the parameter.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                description=spec.description + ("" if spec.live else " (applied on configure)")))
        self._stats = NodeStats()
        self._mailbox: Mailbox[Frame, Job] = Mailbox()
        self._query: str | None = None
        self._predictor = None
        self._worker: threading.Thread | None = None
        self._active = False
        self._subs: list = []
        self._query_topic = self.resolve_topic_name("query")  # for messages; set again on activate
        self._service = None
        self._service_group = MutuallyExclusiveCallbackGroup()
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
        self.get_logger().info(
            f"model '{name}' loaded ({self._param('backend')}, {self._param('device')}, "
            f"{self._param('precision')})")
        if self._predictor.untrained:
            self.get_logger().warning(
                f"model '{name}' has untrained (random) weights: masks and keywords are meaningless")
        self._mask_pub = self.create_lifecycle_publisher(Image, "mask", qos.results())
        self._keyword_pub = self.create_lifecycle_publisher(String, "keyword", qos.results())
        self._result_pub = self.create_lifecycle_publisher(SegmentationResult, "result", qos.results())
        self._overlay_pub = self.create_lifecycle_publisher(Image, "overlay", qos.results())
        self._mailbox = Mailbox()
        self._worker = threading.Thread(target=self._work, name="keyseg_inference", daemon=True)
        self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    def _load_predictor(self):
        """`Predictor.from_pretrained` with this node's parameters; imported here (torch is slow).

        An unavailable backend (tensorrt) is refused by keyseg_core with directions; that message
        becomes the configure failure.
        """
        from keyseg_core.predictor import Predictor

        return Predictor.from_pretrained(
            self._param("model") or None, device=self._param("device"),
            dtype=self._param("precision"), mask_threshold=self._param("mask_threshold"),
            backend=self._param("backend"))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and serve; lifecycle publishers are enabled by the base class."""
        if self._param("compressed_input"):
            self._subs.append(self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, qos.images(self)))
        else:
            self._subs.append(self.create_subscription(Image, "image", self._on_image, qos.images(self)))
        self._subs.append(self.create_subscription(String, "query", self._on_query, qos.queries(self)))
        self._query_topic = self._subs[1].topic_name
        self._subs.append(self.create_subscription(Empty, "clear_query", self._on_clear, qos.queries(self)))
        self._service = self.create_service(
            Segment, "segment", self._on_segment, callback_group=self._service_group)
        self._active = True
        self.get_logger().info(
            f"active: waiting for frames on '{self._subs[0].topic_name}' and a query on "
            f"'{self._query_topic}'")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_serving()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for pub in (self._mask_pub, self._keyword_pub, self._result_pub, self._overlay_pub):
            self.destroy_lifecycle_publisher(pub)
        self._predictor = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop serving and the inference thread (idempotent); called on any way out."""
        self._active = False
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
        self._mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None

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

    def _on_clear(self, msg: Empty) -> None:
        self._query = None
        self.get_logger().info("query cleared: waiting for a new one")

    def _on_segment(self, request: Segment.Request, response: Segment.Response) -> Segment.Response:
        """One-shot service; waits (in its own callback group) for the inference thread."""
        self._stats.count("service_calls")
        problem = query_problem(request.query, self._param("max_query_length"))
        if problem:
            self._stats.count("bad_queries", problem)
            response.success, response.message = False, problem
            return response
        job = Job(request.image, request.query.strip(), response)
        self._mailbox.put_job(job)
        while not job.done.wait(0.1):
            if self._worker is None or not self._active:
                response.success, response.message = False, "node is shutting down"
                return response
        return response

    # ---- inference thread ------------------------------------------------------------------

    def _work(self) -> None:
        """Serve jobs, then the newest frame, at most `max_rate` frames per second."""
        mailbox, last_start = self._mailbox, 0.0
        while True:
            max_rate = self._param("max_rate")
            not_before = last_start + 1.0 / max_rate if max_rate > 0 else 0.0
            item = mailbox.get(timeout=0.5, frames_not_before=not_before)
            if item is None:
                if mailbox.closed:
                    return
                continue
            if isinstance(item, Job):
                self._serve_job(item)
            else:
                last_start = time.monotonic()
                self._serve_frame(item)

    def _predict(self, rgb, query: str):
        self._predictor.mask_threshold = self._param("mask_threshold")
        return self._predictor.predict(rgb, query)

    def _serve_frame(self, frame: Frame) -> None:
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
        try:
            prediction = self._predict(rgb, query)
        except Exception as exc:  # noqa: BLE001 - a failing frame must not stop the stream
            self._stats.count("inference_errors", f"{type(exc).__name__}: {exc}")
            self.get_logger().warning(f"inference failed: {type(exc).__name__}: {exc}",
                                      throttle_duration_sec=THROTTLE_S)
            return
        node_ms = {"queue_wait": (start - frame.received) * 1e3,
                   "decode_image": (decoded - start) * 1e3}
        if self._active:
            self._publish(frame.msg.header, rgb, query, prediction, node_ms)
            self._stats.frame_done((time.monotonic() - frame.received) * 1e3,
                                   prediction.timings_ms.get("total", 0.0))

    def _decode(self, msg: Image | CompressedImage):
        max_size = self._param("max_image_size")
        if isinstance(msg, CompressedImage):
            return conversions.compressed_to_rgb(msg, max_size)
        return conversions.image_to_rgb(msg, max_size)

    def _publish(self, header: Header, rgb, query: str, prediction, node_ms: dict) -> None:
        mask = conversions.mask_to_image(prediction.mask, header)
        self._mask_pub.publish(mask)
        self._keyword_pub.publish(String(data=prediction.keyword))
        self._result_pub.publish(conversions.to_result(
            prediction, header=header, query=query, mask=mask,
            model=self._predictor.model_name, node_timings_ms=node_ms))
        if self._param("publish_overlay") and self._overlay_pub.get_subscription_count():
            label = f"{prediction.keyword} ({prediction.score:.2f})" if prediction.keyword else query
            self._overlay_pub.publish(conversions.rgb_to_image(
                draw_overlay(rgb, prediction.mask, label), header))

    def _serve_job(self, job: Job) -> None:
        response = job.response
        try:
            start = time.monotonic()
            rgb = conversions.image_to_rgb(job.image, self._param("max_image_size"))
            decoded = time.monotonic()
            prediction = self._predict(rgb, job.query)
            mask = conversions.mask_to_image(prediction.mask, job.image.header)
            response.result = conversions.to_result(
                prediction, header=job.image.header, query=job.query, mask=mask,
                model=self._predictor.model_name,
                node_timings_ms={"decode_image": (decoded - start) * 1e3})
            response.success, response.message = True, ""
        except conversions.BadImageError as exc:
            self._stats.count("bad_frames", str(exc))
            response.success, response.message = False, f"bad image: {exc}"
        except Exception as exc:  # noqa: BLE001 - reported to the caller, node keeps serving
            self._stats.count("inference_errors", f"{type(exc).__name__}: {exc}")
            response.success, response.message = False, f"inference failed: {type(exc).__name__}: {exc}"
        finally:
            job.done.set()

    # ---- diagnostics -----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
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
        ))


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT; exit 1 if the model cannot load, 2 on a bad parameter."""
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = KeySegNode()
        except ParameterException as exc:  # invalid value or type given on the command line/YAML
            print(f"keyseg_node: error: {exc}", file=sys.stderr)
            return 2
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("configure failed (see the error above); exiting")
                return 1
            node.trigger_activate()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
