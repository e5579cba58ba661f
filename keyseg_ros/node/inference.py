"""keyseg_node's model side: what the inference thread does with a frame or a `segment` request,
and what the reasoning thread (streaming) hands back.

The node (lifecycle.py) owns the threads' lifetimes: it starts the inference thread on configure
with a fresh mailbox and halt event, and stops it on cleanup and shutdown. Everything here runs on
those threads, never on an executor callback, so the executor never waits on the model. Results
go out through the ResultPublisher (publishing.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import CompressedImage, Image

from keyseg_core.inference.refine import make_refiner
from keyseg_ros.node import conversions
from keyseg_ros.node.diagnostics import NodeStats
from keyseg_ros.node.drills import Drills
from keyseg_ros.node.failures import FailureLog, free_accelerator_memory
from keyseg_ros.node.mailbox import Mailbox
from keyseg_ros.node.publishing import ResultPublisher
from keyseg_ros.node.work import CameraFrame, Job

THROTTLE_S = 2.0  # at most one warning of each kind per this many seconds


def load_predictor(param: Callable[[str], Any]):
    """`Predictor.from_pretrained` with the node's parameters (`param` reads one); imported here
    (torch is slow).

    An unavailable backend (tensorrt) is refused by keyseg_core with directions; that message
    becomes the configure failure.
    """
    from keyseg_core.runtime.predictor import Predictor

    return Predictor.from_pretrained(
        param("model") or None, device=param("device"),
        dtype=param("precision"), mask_threshold=param("mask_threshold"),
        backend=param("backend"), cpu_fallback=param("cpu_fallback"),
        category_gate=param("category_gate"), presence=param("presence"), refine=param("refine"),
        geometry_ranker=param("geometry_ranker"))


class Inference:
    """The model, the active query and the streaming driver, and the work done with them.

    `predictor` is keyseg_core's Predictor while the node is configured; `stream` its
    keyseg_core.inference.stream.StreamingSegmenter when configured with streaming. `busy` is set
    while a prediction (frame, reasoning or call) is in the model.
    """

    def __init__(self, node: LifecycleNode, stats: NodeStats, outputs: ResultPublisher, drills: Drills,
                 stopping: threading.Event) -> None:
        self._node, self._stats, self._outputs, self._drills = node, stats, outputs, drills
        self._stopping = stopping  # the process is shutting down (never cleared)
        self._logger = node.get_logger()
        self._failures = FailureLog(self._logger)
        self.busy = threading.Event()
        self._busy_count = 0
        self._busy_lock = threading.Lock()
        self.predictor = None
        self.stream = None
        self.query: str | None = None
        self.query_topic = node.resolve_topic_name("query")  # for messages; set again on activate
        self._mask_prompt_warned = False

    def _param(self, name: str):
        return self._node.get_parameter(name).value

    def load(self) -> None:
        """Load the model (`load_predictor`); on failure `predictor` stays as it was."""
        self.predictor = load_predictor(self._param)

    def start_stream(self, halt: threading.Event) -> None:
        """With `streaming`, the streaming driver: reasoning on its own thread, through the fault
        drill and busy flag; results of reasoned frames are published from there."""
        if not self._param("streaming"):
            self.stream = None
            return
        from keyseg_core.inference.stream import StreamingSegmenter

        stream = StreamingSegmenter(
            period_s=self._param("reasoning_period"), previous_mask=self._param("previous_mask_prompt"),
            background=True, device=self.predictor.device,
            reason=lambda rgb, query: self._in_model(lambda: self.predictor.reason(rgb, query), halt),
            segment=lambda rgb, reasoning, prompt: self._in_model(
                lambda: self.predictor.segment(rgb, reasoning, prompt), halt),
            on_reasoned=self._on_reasoned, on_error=self._on_reasoning_error)
        if self.query is not None:
            stream.set_query(self.query)
        self.stream = stream

    # ---- inference thread ------------------------------------------------------------------

    def work(self, mailbox: Mailbox, halt: threading.Event) -> None:
        """The inference thread: serve jobs, then the newest frame, at most `max_rate` frames per
        second, until `halt`.

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

    def _in_model(self, call: Callable, halt: threading.Event):
        """One model call (a prediction, a reasoning pass or a segmentation) under the busy flag,
        the fault drill and the test delay."""
        self._drills.before_model_call()
        with self._busy_lock:
            self._busy_count += 1
            self.busy.set()
        try:
            self.predictor.mask_threshold = self._param("mask_threshold")
            self.predictor.refiner = make_refiner(self._param("refine"))
            categories = self._param("instance_mode") == "categories"
            self.predictor.instance_share = self._param("category_share") if categories else None
            result = call()
            self._drills.after_model_call(halt)
            return result
        finally:
            with self._busy_lock:
                self._busy_count -= 1
                if not self._busy_count:
                    self.busy.clear()

    def _report_failure(self, exc: BaseException) -> None:
        self._stats.count("inference_errors", f"{type(exc).__name__}: {exc}")
        self._failures.failed("inference", exc, free_accelerator_memory(exc))

    def _predict_or_report(self, rgb, queries: list[str], halt: threading.Event):
        """(predictions, None), or (None, error) after counting and logging (once per run) the error.
        Several queries on one image run as one batch (the image is encoded once)."""
        predictor = self.predictor
        try:
            if len(queries) == 1:
                predictions = [self._in_model(lambda: predictor.predict(rgb, queries[0]), halt)]
            else:
                frame = predictor.cache_frame(rgb)
                predictions = self._in_model(lambda: predictor.predict_queries(queries, frame), halt)
        except Exception as exc:  # noqa: BLE001 - a failing frame must not stop the stream
            self._report_failure(exc)
            return None, exc
        self._failures.succeeded()
        return predictions, None

    def _serve_frame(self, frame: CameraFrame, halt: threading.Event) -> None:
        query = self.query
        if query is None:
            self._stats.count("frames_without_query")
            self._logger.warning(
                f"frames arrive but there is no query yet: publish one on '{self.query_topic}'",
                throttle_duration_sec=10.0)
            return
        start = time.monotonic()
        try:
            rgb = self._decode(frame.msg)
        except conversions.BadImageError as exc:
            self._stats.count("bad_frames", str(exc))
            self._logger.warning(f"dropped a frame: {exc}", throttle_duration_sec=THROTTLE_S)
            return
        decoded = time.monotonic()
        node_ms = {"queue_wait": (start - frame.received) * 1e3,
                   "decode_image": (decoded - start) * 1e3}
        stream = self.stream
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
        accepted = self.predictor.segmenter.accepts_mask_prompt
        if wanted and not accepted and not self._mask_prompt_warned:
            self._mask_prompt_warned = True
            self._logger.warning(
                f"previous_mask_prompt is set but backend '{self.predictor.backend.name}' takes no mask "
                "prompt (torch and compile do); segmenting without it")
        stream.previous_mask = wanted and accepted

    def _publish_frame(self, frame: CameraFrame, rgb, query: str, prediction, node_ms: dict) -> None:
        if self._outputs.publish(frame.msg.header, rgb, query, prediction, node_ms, frame.received,
                                 self.predictor.model_name):
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
            model=self.predictor.model_name,
            node_timings_ms={"decode_image": (decoded - start) * 1e3})
            for query, prediction in zip(job.queries, predictions)]
        job.finish(True, "", results)
