"""The demo's own rclpy node: what one keyseg_node publishes (result, mask, keyword, diagnostics),
kept with arrival times so every answer can be matched to its query and scene and scored.
"""

from __future__ import annotations

import threading
import time

from rclpy.node import Node

from keyseg_ros.tools.demo.scenes import FRAME_PREFIX, Item


class Collector:
    """result/mask/keyword/diagnostics of one keyseg_node, kept with their arrival times."""

    def __init__(self, node: Node, ns: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from keyseg_ros.msg import KeywordStamped, SegmentationResult

        self.node, self.ns = node, ns
        self.lock = threading.Lock()
        self.results: list[tuple[float, object]] = []
        self.masks: dict[tuple[str, int, int], bytes] = {}
        self.keywords: list[str] = []
        self.status: dict[str, str] = {}
        self._status_name = f"{ns}/keyseg_node: segmentation"
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(SegmentationResult, f"{ns}/result", self._on_result, reliable)
        node.create_subscription(Image, f"{ns}/mask", self._on_mask, reliable)
        node.create_subscription(KeywordStamped, f"{ns}/keyword", self._on_keyword, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_result(self, msg) -> None:
        now = time.time()
        if msg.header.frame_id.startswith(FRAME_PREFIX):
            with self.lock:
                self.results.append((now, msg))

    def _on_mask(self, msg) -> None:
        if msg.header.frame_id.startswith(FRAME_PREFIX):
            key = (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec)
            with self.lock:
                self.masks[key] = bytes(msg.data)

    def _on_keyword(self, msg) -> None:
        with self.lock:
            self.keywords.append(msg.keyword)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == self._status_name:
                with self.lock:
                    self.status = {kv.key: kv.value for kv in status.values}

    def matching(self, item: Item) -> list:
        with self.lock:
            return [(t, m) for t, m in self.results
                    if m.query == item.query and m.header.frame_id == item.frame_id]

    def answered_frames_of(self, item: Item) -> bool:
        """A result (for any query) on a frame of `item`'s scene has arrived."""
        with self.lock:
            return any(m.header.frame_id == item.frame_id for _, m in self.results)

    def mask_agrees(self, result) -> bool:
        """The `mask` topic delivered the same mask as `result` for the same frame."""
        key = (result.header.frame_id, result.header.stamp.sec, result.header.stamp.nanosec)
        with self.lock:
            return self.masks.get(key) == bytes(result.mask.data)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"result": len(self.results), "mask": len(self.masks), "keyword": len(self.keywords)}

    def node_ready(self) -> bool:
        """keyseg_node is active here: it subscribes to image and query, and publishes results."""
        return (self.node.count_subscribers(f"{self.ns}/image") > 0
                and self.node.count_subscribers(f"{self.ns}/query") > 0
                and self.node.count_publishers(f"{self.ns}/result") > 0)

    def problem(self) -> str:
        """The node's own account from its diagnostics, for error messages ("" when none)."""
        with self.lock:
            status = dict(self.status)
        if not status:
            return ""
        keys = ("frames_received", "frames_processed", "inference_errors", "bad_frames")
        counters = ", ".join(f"{k} {status[k]}" for k in keys if k in status)
        last = status.get("last_problem", "")
        return f" (keyseg_node reports {counters}" + (f"; last problem: {last}" if last else "") + ")"

    def inference_errors(self) -> int:
        with self.lock:
            return int(float(self.status.get("inference_errors", 0) or 0))
