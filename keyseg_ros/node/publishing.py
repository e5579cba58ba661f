"""What an answered frame publishes: mask, keyword, result, detections with track ids, the overlay,
and, with depth, the 3D stage's target_point, target_cloud and detections_3d.

The node (lifecycle.py) decides when these publishers exist (configure, cleanup) and whether it
serves (activate, deactivate, shutdown); this is where the messages are built and sent, under the
rules that hold for every output: nothing is sent once the node stopped serving, a frame older
than the newest one published is dropped (the reasoning thread finishes late), and track ids
follow the order frames are published in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from geometry_msgs.msg import PointStamped
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray

from keyseg_core.inference.instances import prediction_instances
from keyseg_core.inference.overlay import overlay as draw_overlay
from keyseg_core.inference.tracking import MaskTracker
from keyseg_ros.msg import KeywordStamped, SegmentationResult
from keyseg_ros.node import conversions, detections, qos, transforms
from keyseg_ros.node.diagnostics import NodeStats
from keyseg_ros.node.target3d import Answer, Outputs, Settings, Target3D

# topic -> message type of the lifecycle publishers, in the order they are created
TOPICS = (("mask", Image), ("keyword", KeywordStamped), ("result", SegmentationResult), ("overlay", Image),
          ("detections", Detection2DArray), ("target_point", PointStamped), ("target_cloud", PointCloud2),
          ("detections_3d", Detection3DArray))


class ResultPublisher:
    """The node's output publishers, track ids and 3D stage, from configure to cleanup.

    Every publish holds `lock`, the lock under which the node changes whether it is `serving()`:
    so deactivate and shutdown wait for a publish in progress, and no publish starts after them
    (a shut-down context makes publish raise). Track ids are given under it too.
    """

    def __init__(self, node: LifecycleNode, lock: threading.Lock, serving: Callable[[], bool],
                 stats: NodeStats) -> None:
        self._node, self._lock, self._serving, self._stats = node, lock, serving, stats
        self._pubs: dict = {}
        self._tracker: MaskTracker | None = None
        self._tracked_query: str | None = None  # the query the tracker's ids belong to
        self._last_published = -1.0  # arrival time of the newest frame published
        self._tf_buffer = self._tf_listener = None
        self.target3d: Target3D | None = None  # the 3D stage, with use_depth

    def _param(self, name: str):
        return self._node.get_parameter(name).value

    def create(self) -> None:
        """On configure: lifecycle publishers, a fresh tracker and, with use_depth, the 3D stage."""
        node = self._node
        self._pubs = {topic: node.create_lifecycle_publisher(kind, topic, qos.results())
                      for topic, kind in TOPICS}
        self._tracker = MaskTracker(self._param("track_iou"), self._param("lost_frames"), self._param("track_gate"))
        self._tracked_query = None
        self.target3d = None
        if self._param("use_depth"):
            self._tf_buffer, self._tf_listener = transforms.make_buffer(node)
            self.target3d = Target3D(
                settings=self._settings_3d, publish=self._publish_3d, stats=self._stats,
                logger=node.get_logger(), tf_buffer=self._tf_buffer,
                depth_topic=node.resolve_topic_name("depth"), info_topic=node.resolve_topic_name("camera_info"),
                background=True)
        self._last_published = -1.0

    def close_3d(self, timeout: float) -> bool:
        """Stop the 3D stage's thread; False when it is still busy after `timeout` seconds."""
        target3d = self.target3d
        return target3d is None or target3d.close(timeout=timeout)

    def destroy(self) -> None:
        """On cleanup (after the threads that publish have stopped)."""
        for pub in self._pubs.values():
            self._node.destroy_lifecycle_publisher(pub)
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        self._tf_buffer = self._tf_listener = self.target3d = self._tracker = None

    def restart_tracks(self) -> None:
        """The query was cleared: the same query asked again starts new tracks."""
        with self._lock:
            self._tracked_query = None

    def publish(self, header: Header, rgb, query: str, prediction, node_ms: dict, received: float,
                model: str) -> bool:
        """Publish one frame's outputs unless the node stopped serving meanwhile or a newer frame
        was published already; True if sent. Its instances then go to the 3D stage."""
        mask = conversions.mask_to_image(prediction.mask, header)
        result = conversions.to_result(
            prediction, header=header, query=query, mask=mask, model=model, node_timings_ms=node_ms)
        keyword = KeywordStamped(header=header, keyword=prediction.keyword,
                                 probability=float(prediction.keyword_prob), query=query)
        instances, keywords = prediction_instances(prediction, self._param("instance_mode"),
                                                   self._param("min_instance_area"))
        overlay = None
        if self._param("publish_overlay") and self._pubs["overlay"].get_subscription_count():
            if not prediction.present:
                label = f"not here: {query}"
            else:
                label = f"{prediction.keyword} ({prediction.score:.2f})" if prediction.keyword else query
            overlay = conversions.rgb_to_image(draw_overlay(rgb, prediction.mask, label), header)
        with self._lock:
            if not self._serving() or received <= self._last_published:
                return False
            self._last_published = received
            ids = self._track(query, instances, keywords)
            self._pubs["mask"].publish(mask)
            self._pubs["keyword"].publish(keyword)
            self._pubs["detections"].publish(detections.detections_2d(
                header, instances, ids, keywords, prediction.score))
            self._pubs["result"].publish(result)
            if overlay is not None:
                self._pubs["overlay"].publish(overlay)
        target3d = self.target3d
        if target3d is not None:
            target3d.frame_answered(Answer(header, int(prediction.mask.shape[1]), int(prediction.mask.shape[0]),
                                           instances, ids, keywords, float(prediction.score)))
        return True

    def _track(self, query: str, instances: list, keywords: list[str]) -> list[str]:
        """Track ids of this frame's instances (labelled by their keywords); a new query starts new tracks."""
        tracker = self._tracker
        if query != self._tracked_query:
            tracker.reset()
            self._tracked_query = query
        tracker.iou_threshold, tracker.lost_frames = self._param("track_iou"), self._param("lost_frames")
        tracker.gate = self._param("track_gate")
        return tracker.update(instances, keywords)

    def _settings_3d(self) -> Settings:
        return Settings(max_depth=self._param("max_depth"), erode_px=self._param("mask_erosion"),
                        min_points=self._param("min_points"), decimation=self._param("cloud_decimation"),
                        target_frame=self._param("target_frame"), tf_timeout=self._param("tf_timeout"))

    def _publish_3d(self, outputs: Outputs) -> bool:
        """The 3D stage's outputs, under the same rules as `publish`; True if sent."""
        with self._lock:
            if not self._serving():
                return False
            self._pubs["target_point"].publish(outputs.point)
            self._pubs["target_cloud"].publish(outputs.cloud)
            self._pubs["detections_3d"].publish(outputs.detections)
        return True
