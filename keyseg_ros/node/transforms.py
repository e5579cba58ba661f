"""target_frame: the 3D outputs moved out of the camera's optical frame with tf2, at the frame's stamp.

A buffer is anything with tf2_ros.Buffer's `lookup_transform(target, source, time, timeout)`
returning a geometry_msgs/TransformStamped: tf2_ros' own on a ROS install (fed by a
TransformListener), or a test's stand-in. Without tf2_ros (the PyPI wheels have none) there is no
buffer, and a set target_frame is a failure said in the log, like an unknown frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import Header


class TransformError(RuntimeError):
    """No transform to target_frame for this frame; the message names both frames and why."""


@dataclass(frozen=True)
class Transform:
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # x, y, z, w


IDENTITY = Transform((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def make_buffer(node: Node) -> tuple[Any, Any]:
    """(buffer, listener) from tf2_ros, or (None, None) where tf2_ros is not installed."""
    try:
        import tf2_ros
    except ImportError:
        return None, None
    buffer = tf2_ros.Buffer()
    # The node's own executor feeds the listener (no thread of its own, which would spin this node
    # in a second executor); lookups wait on the inference thread, never in a callback.
    return buffer, tf2_ros.TransformListener(buffer, node)


def lookup(buffer: Any, target_frame: str, header: Header, timeout_s: float) -> Transform:
    """The transform taking points from header.frame_id to target_frame at header.stamp."""
    if buffer is None:
        raise TransformError(f"target_frame '{target_frame}' is set but tf2_ros is not installed, so "
                             f"no transform from '{header.frame_id}' can be looked up")
    try:
        stamped = buffer.lookup_transform(target_frame, header.frame_id, Time.from_msg(header.stamp),
                                          timeout=Duration(seconds=timeout_s))
    except Exception as exc:  # noqa: BLE001 - tf2 raises several types (lookup, connectivity, extrapolation)
        raise TransformError(f"no transform from '{header.frame_id}' to target_frame '{target_frame}' "
                             f"at the frame's stamp: {type(exc).__name__}: {exc}") from None
    t, r = stamped.transform.translation, stamped.transform.rotation
    return Transform((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))
